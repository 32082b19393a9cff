"""The README's demo, for real: `edge-agent serve --config config/demo.yaml` as a process,
pulling the signed demo bundle from the file registry, scoring FHIR and HL7 over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.integration.agent_process import REPO, AgentProcess, demo_root, start_agent

pytestmark = pytest.mark.integration

AS_OF = "2026-03-15T12:00:00Z"  # the clinical time of the demo fixtures
PREDICT = f"/v1/models/deterioration/predict?as_of={AS_OF}"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(demo_root(tmp_path_factory.mktemp("e2e")))
    yield process
    assert process.stop() == 0, process.log_text()


def _onnxruntime_probability(vector: list[float]) -> float:
    session = ort.InferenceSession(str(REPO / "fixtures/demo/model.onnx"))
    _, probabilities = session.run(None, {"X": np.array([vector], dtype=np.float32)})
    return float(probabilities[0][1])


def test_fhir_bundle_scores_as_onnxruntime_does(agent: AgentProcess) -> None:
    body = (REPO / "fixtures/fhir/demo-patient-bundle.json").read_bytes()
    with agent.client() as client:
        response = client.post(
            PREDICT + "&explain=true",
            content=body,
            headers={"Content-Type": "application/fhir+json"},
        )
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["model"] == "deterioration" and prediction["version"] == "1.0.0"
    vector = [f["model_value"] for f in prediction["explanation"]]
    assert [f["feature"] for f in prediction["explanation"]][:2] == [
        "heart_rate",
        "respiratory_rate",
    ]
    assert all(not f["imputed"] for f in prediction["explanation"])
    # the demo is built from an ONNX file: no contribution data, and the answer says so
    assert prediction["contributions"]["available"] is False
    assert "no contribution data" in prediction["contributions"]["detail"]
    assert prediction["outputs"]["probability_1"] == pytest.approx(
        _onnxruntime_probability(vector), abs=1e-5
    )


def test_hl7_message_with_the_same_facts_gives_the_same_score(agent: AgentProcess) -> None:
    with agent.client() as client:
        fhir = client.post(
            PREDICT,
            content=(REPO / "fixtures/fhir/demo-patient-bundle.json").read_bytes(),
            headers={"Content-Type": "application/fhir+json"},
        ).json()
        hl7 = client.post(
            PREDICT,
            content=(REPO / "fixtures/hl7/oru-r01-v25.hl7").read_bytes(),
            headers={"Content-Type": "x-application/hl7-v2+er7"},
        )
    assert hl7.status_code == 200, hl7.text
    assert hl7.json()["predictions"][0]["outputs"] == fhir["predictions"][0]["outputs"]


def test_vitals_only_record_scores_with_imputed_labs_reported(agent: AgentProcess) -> None:
    with agent.client() as client:
        response = client.post(
            PREDICT,
            content=(REPO / "fixtures/fhir/vitals-only-bundle.json").read_bytes(),
            headers={"Content-Type": "application/fhir+json"},
        )
    assert response.status_code == 200, response.text
    warnings = response.json()["predictions"][0]["warnings"]
    assert {(w["feature"], w["warning"]) for w in warnings} >= {
        ("wbc", "imputed"),
        ("creatinine", "imputed"),
    }


def test_fhir_risk_assessment_on_request(agent: AgentProcess) -> None:
    with agent.client() as client:
        response = client.post(
            PREDICT,
            content=(REPO / "fixtures/fhir/demo-patient-bundle.json").read_bytes(),
            headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        )
    assert response.status_code == 200
    resource = response.json()
    assert resource["resourceType"] == "RiskAssessment"
    assert resource["method"]["coding"][0]["code"] == "deterioration@1.0.0"
    assert 0.0 <= resource["prediction"][0]["probabilityDecimal"] <= 1.0


def test_bad_input_gets_an_operation_outcome_and_the_agent_goes_on(agent: AgentProcess) -> None:
    with agent.client() as client:
        bad_json = client.post(
            PREDICT, content=b"{not json", headers={"Content-Type": "application/fhir+json"}
        )
        wrong_type = client.post(PREDICT, content=b"a,b", headers={"Content-Type": "text/csv"})
        unknown = client.post(
            "/v1/models/nope/predict",
            content=b"{}",
            headers={"Content-Type": "application/fhir+json"},
        )
        assert client.get("/healthz").status_code == 200
    assert bad_json.status_code == 400
    assert bad_json.json()["resourceType"] == "OperationOutcome"
    assert wrong_type.status_code == 415
    assert unknown.status_code == 404


def test_metrics_count_the_predictions(agent: AgentProcess) -> None:
    with agent.client() as client:
        client.post(
            PREDICT,
            content=(REPO / "fixtures/fhir/demo-patient-bundle.json").read_bytes(),
            headers={"Content-Type": "application/fhir+json"},
        )
        text = client.get("/metrics").text
        models = client.get("/v1/models").json()["models"]
    active = 'keyid="c54ce43e9dcdc76f",model="deterioration",version="1.0.0"'
    assert f"edge_agent_model_active_info{{{active}}} 1.0" in text
    predicted = [
        line
        for line in text.splitlines()
        if line.startswith("edge_agent_predictions_total{") and 'intake="http"' in line
    ]
    assert predicted and float(predicted[0].rsplit(" ", 1)[1]) >= 1
    assert models[0]["signer_keyid"] == "c54ce43e9dcdc76f"


def test_config_check_names_the_broken_key(tmp_path: Path) -> None:
    config = demo_root(tmp_path, edit=lambda c: c["http"].update(prot=8081))
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "config", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "http.prot" in result.stderr and "demo.yaml:" in result.stderr


def _recent(observations: list[dict[str, object]]) -> list[dict[str, object]]:
    """The demo's observations moved so the newest is an hour old (CDS Hooks has no as-of)."""
    times = [datetime.fromisoformat(str(o["effectiveDateTime"])) for o in observations]
    shift = datetime.now(UTC) - timedelta(hours=1) - max(times)
    return [
        {**o, "effectiveDateTime": (t + shift).isoformat()}
        for o, t in zip(observations, times, strict=True)
    ]


def _searchset(observations: list[dict[str, object]], patient_id: str) -> dict[str, object]:
    """Observations as a FHIR server's search returns them: subjects as Patient/{id}."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {**o, "subject": {"reference": f"Patient/{patient_id}"}}}
            for o in observations
        ],
    }


def test_cds_hooks_discovery_and_card(agent: AgentProcess) -> None:
    bundle = json.loads((REPO / "fixtures/fhir/demo-patient-bundle.json").read_text())
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    call = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": patient["id"]},
        "prefetch": {
            "patient": patient,
            "observations": _searchset(_recent(observations), patient["id"]),
        },
    }
    with agent.client() as client:
        service = client.get("/cds-services").json()["services"][0]
        answer = client.post(f"/cds-services/{service['id']}", json=call)
        stale = client.post(
            f"/cds-services/{service['id']}",
            json={
                **call,
                "prefetch": {
                    "patient": patient,
                    "observations": _searchset(observations, patient["id"]),
                },
            },
        )
        without_prefetch = client.post(
            f"/cds-services/{service['id']}", json={**call, "prefetch": {}}
        )
    assert service["hook"] == "patient-view"
    assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert "http://loinc.org|85354-9" in service["prefetch"]["observations"]
    assert answer.status_code == 200, answer.text
    card = answer.json()["cards"][0]
    assert len(card["summary"]) < 140
    assert card["indicator"] in {"info", "warning", "critical"}
    assert card["source"]["label"] == "edge-agent deterioration 1.0.0"
    # week-old vitals fall outside the mapping's 24 h window: refused, not guessed
    assert stale.status_code == 422
    assert without_prefetch.status_code == 412


def test_mapping_explain_with_the_agents_config(agent: AgentProcess) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "mapping",
            "explain",
            "--config",
            str(agent.config_path),
            "--model",
            "deterioration",
            "--as-of",
            AS_OF,
            "--json",
            str(REPO / "fixtures/fhir/demo-patient-bundle.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [explained] = json.loads(result.stdout)
    by_name = {f["feature"]: f for f in explained["features"]}
    assert by_name["systolic_bp"]["source"].startswith("Observation")
    assert by_name["sex"]["unit"] is None and not by_name["heart_rate"]["imputed"]


def test_refusals_before_scoring_are_counted(agent: AgentProcess) -> None:
    def errors(text: str, reason: str) -> float:
        prefix = f'edge_agent_errors_total{{intake="http",model="deterioration",reason="{reason}"}}'
        found = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    with agent.client() as client:
        before = errors(client.get("/metrics").text, "unsupported_media_type")
        client.post(PREDICT, content=b"a,b", headers={"Content-Type": "text/csv"})
        after = errors(client.get("/metrics").text, "unsupported_media_type")
    assert after == before + 1
