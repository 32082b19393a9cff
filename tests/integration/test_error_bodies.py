"""Error bodies on the real process name elements by the schema's path, never by a key the
sender wrote (issue 18: unknown element names from the input were echoed). A key may carry
anything, a name or an MRN shaped like an element name; the answer names its parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.agent_process import demo_root, start_agent
from tests.integration.reliability_support import FHIR, PATIENT_BUNDLE, PREDICT

pytestmark = pytest.mark.integration

KEY = "DoeJaneMRN004217"  # has the shape of an element name: the old filter let it through


def test_an_unknown_key_is_not_echoed_by_predict_or_cds_hooks(tmp_path: Path) -> None:
    bundle = json.loads(PATIENT_BUNDLE)
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    observation = next(r for r in resources if r["resourceType"] == "Observation")
    observation["valueQuantity"][KEY] = 1
    call = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": patient["id"]},
        "prefetch": {
            "patient": patient,
            "observations": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": observation}],
            },
        },
    }
    agent = start_agent(demo_root(tmp_path))
    try:
        with agent.client() as client:
            predict = client.post(PREDICT, content=json.dumps(bundle).encode(), headers=FHIR)
            service = client.get("/cds-services").json()["services"][0]
            cds = client.post(f"/cds-services/{service['id']}", json=call)
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert predict.status_code == 400 and cds.status_code == 400, (predict.text, cds.text)
    for answer in (predict, cds):
        assert KEY not in answer.text  # before: "...valueQuantity.DoeJaneMRN004217: ..."
        assert "valueQuantity: holds an element not defined" in answer.text
    assert KEY not in agent.log_text()
