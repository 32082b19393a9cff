"""One corpus of mixed inputs through every intake path of the real process (HTTP, MLLP, the
drop folder and ``edge-agent score``): each path gives the same outcome to each patient,
with the same reason from the one vocabulary (docs/outcomes.md).

The corpus: one scorable patient; two patients of whom one lacks his vital signs; no
patient at all (a lone Condition, a CapabilityStatement, an empty Bundle); a transaction
Bundle whose DELETE and GET entries carry nothing; a temperature of 100.4 labelled Cel; an
HL7 ADT without PID; the same patient and the mislabelled temperature as HL7 ORUs. Times are
relative to now, since the drop folder scores what it is given as of its arrival.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.integration.agent_process import AgentProcess, demo_root, start_agent
from tests.integration.monitoring_records import (
    Identity,
    ReferenceRow,
    hl7_message,
    patient_resources,
    reference_rows,
)
from tests.integration.monitoring_traffic import (
    config_for_traffic,
    drop_folder,
    mllp_send,
    wait_for_drop_folder,
)

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/deterioration/predict"
Outcomes = list[tuple[str, str | None]]  # per patient: (scored|refused, reason), sorted

NOW = datetime.now(UTC)
WHO = Identity("Doe", "Jane", "MRN-1", "1 Main St", "Town", "0000")
OBSERVED = (NOW - timedelta(hours=1)).isoformat(timespec="seconds")


def _row() -> ReferenceRow:
    return next(r for r in reference_rows() if None not in r.values.values())


def _fever_in_degf(row: ReferenceRow) -> ReferenceRow:
    return ReferenceRow({**row.values, "body_temperature": 100.4}, row.sex)  # "Cel"


def _bundle(resources: list[dict[str, object]], kind: str = "collection") -> bytes:
    entries = [{"resource": r} for r in resources]
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}).encode()


def _without_vitals(row: ReferenceRow) -> list[dict[str, object]]:
    return [
        r
        for r in patient_resources(row, observed_at=OBSERVED)
        if r["resourceType"] == "Patient" or "8867-4" not in json.dumps(r)
    ]


def _transaction(row: ReferenceRow) -> bytes:
    resources = patient_resources(row, observed_at=OBSERVED)
    entries: list[dict[str, object]] = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    entries.append({"request": {"method": "DELETE", "url": "Observation/gone"}})
    entries.append({"request": {"method": "GET", "url": "Observation?code=8867-4"}})
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


def _adt_without_pid() -> bytes:
    stamp = NOW.strftime("%Y%m%d%H%M%S+0000")
    return (
        f"MSH|^~\\&|ADT|GENERAL_HOSP|EDGE_AGENT|GENERAL_HOSP|{stamp}||ADT^A01^ADT_A01|"
        f"ADT-{uuid.uuid4().hex[:8]}|P|2.5\rEVN|A01|{stamp}\rPV1|1|I|WARD^1^1\r"
    ).encode()


def corpus() -> dict[str, tuple[str, bytes, Outcomes]]:
    """name -> (format, body, the outcome each patient must get)."""
    row = _row()
    other = reference_rows()[7]
    scored: Outcomes = [("scored", None)]
    return {
        "one-patient.json": ("fhir", _bundle(patient_resources(row, observed_at=OBSERVED)), scored),
        "two-one-refused.json": (
            "fhir",
            _bundle(patient_resources(row, observed_at=OBSERVED) + _without_vitals(other)),
            sorted([("scored", None), ("refused", "missing")], key=str),
        ),
        "lone-condition.json": (
            "fhir",
            json.dumps(
                {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": "Patient/x"},
                    "clinicalStatus": {"coding": [{"code": "active"}]},
                }
            ).encode(),
            [("refused", "no_patient")],
        ),
        "capability.json": (
            "fhir",
            json.dumps(
                {
                    "resourceType": "CapabilityStatement",
                    "status": "active",
                    "date": "2026-01-01",
                    "kind": "instance",
                    "fhirVersion": "4.0.1",
                    "format": ["json"],
                }
            ).encode(),
            [("refused", "no_patient")],
        ),
        "empty.json": ("fhir", _bundle([]), [("refused", "no_patient")]),
        "transaction.json": ("fhir", _transaction(row), scored),
        "fever-degf.json": (
            "fhir",
            _bundle(patient_resources(_fever_in_degf(row), observed_at=OBSERVED)),
            [("refused", "out_of_range")],
        ),
        "adt-no-pid.hl7": ("hl7", _adt_without_pid(), [("refused", "no_patient")]),
        "oru.hl7": ("hl7", hl7_message(row, "ORU-1", NOW - timedelta(hours=1), WHO), scored),
        "oru-fever.hl7": (
            "hl7",
            hl7_message(_fever_in_degf(row), "ORU-2", NOW - timedelta(hours=1), WHO),
            [("refused", "out_of_range")],
        ),
    }


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(demo_root(tmp_path_factory.mktemp("outcomes"), config_for_traffic))
    yield process
    assert process.stop() == 0, process.log_text()


def _http(agent: AgentProcess, fmt: str, body: bytes) -> Outcomes:
    media = "application/fhir+json" if fmt == "fhir" else "x-application/hl7-v2+er7"
    with agent.client() as client:
        response = client.post(PREDICT, content=body, headers={"Content-Type": media})
    answer = response.json()
    assert response.status_code != 500, response.text
    if response.status_code == 200:
        return sorted(((p["status"], p.get("reason")) for p in answer["predictions"]), key=str)
    assert answer["resourceType"] == "OperationOutcome", response.text
    return sorted((("refused", i["details"]["text"]) for i in answer["issue"]), key=str)


def _mllp(agent: AgentProcess, body: bytes) -> Outcomes:
    port = int(yaml.safe_load(agent.config_path.read_text())["mllp"]["port"])
    ack = mllp_send("127.0.0.1", port, body).decode()
    segments = [s.split("|") for s in ack.split("\r") if s]
    code = next(s[1] for s in segments if s[0] == "MSA")
    if code == "AA":
        return [("scored", None)]
    assert code == "AE", ack
    return sorted((("refused", s[5]) for s in segments if s[0] == "ERR"), key=str)


def _result_lines(path: Path) -> Outcomes:
    outcomes: Outcomes = []
    for raw in path.read_text().splitlines():
        line = json.loads(raw)
        for patient in line.get("predictions") or [line]:
            scored = "outputs" in patient
            outcomes.append(
                ("scored", None) if scored else ("refused", patient.get("reason") or line["reason"])
            )
    return sorted(outcomes, key=str)


def test_every_path_gives_each_patient_the_same_outcome(
    agent: AgentProcess, tmp_path: Path
) -> None:
    items = corpus()
    inbox = drop_folder(agent, "inbox")
    for name, (_, body, _) in items.items():
        temporary = inbox / f".{name}.tmp"
        temporary.write_bytes(body)
        temporary.rename(inbox / name)
    files = tmp_path / "files"
    files.mkdir()
    for name, (_, body, _) in items.items():
        (files / name).write_bytes(body)
    scored_by_cli = tmp_path / "scored"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "score",
            "--config",
            str(agent.config_path),
            "-o",
            str(scored_by_cli),
            *sorted(str(p) for p in files.iterdir()),
        ],
        check=False,
        capture_output=True,
        timeout=120,
    )
    wait_for_drop_folder(agent, list(items), timeout=60)
    outbox = drop_folder(agent, "outbox")

    seen: dict[str, dict[str, Outcomes]] = {}
    for name, (fmt, body, expected) in items.items():
        paths = {
            "http": _http(agent, fmt, body),
            "drop folder": _result_lines(outbox / f"{name}.results.ndjson"),
            "edge-agent score": _result_lines(scored_by_cli / f"{name}.results.ndjson"),
        }
        if fmt == "hl7":
            paths["mllp"] = _mllp(agent, body)
        seen[name] = {path: outcomes for path, outcomes in paths.items() if outcomes != expected}
    assert {name: wrong for name, wrong in seen.items() if wrong} == {}
