"""No patient data leaves the agent except to the caller who sent it, as its own results.

A patient with a distinctive name, MRN, birth date, address and creatinine value goes through
every surface of the real process (HTTP FHIR and HL7, OIP, CDS Hooks, MLLP, the drop folder),
in valid records, broken ones (a distinctive text where a number belongs) and unmappable ones,
with the agent logging at DEBUG. None of those strings may then appear in /metrics, the status
page, the agent's log output, the audit log, any HTTP answer or MLLP ACK, or any file the drop
folder writes (results, reports, error files, and whatever its state folder still holds).

What answers and the drop folder's results do carry is each patient's reference as the
sender gave it: the Patient resource id (``Patient/<id>``) or, for HL7 v2, PID-3's identifier
(the MRN), the HL7 message control id (MSH-10), and a FHIR RiskAssessment's subject. That is
right: they go back only to the sender, which already holds them, and without them a caller
could not tell which of several patients was scored and which refused. Everything else
(names, address, birth date, values) stays forbidden there too, and the MRN is forbidden
everywhere else (metrics, status page, logs, audit). The tests assert the references are
there, so that this decision stays visible. The originals moved to
processed/ and failed/ are the sender's files, kept as they came, and are not searched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_process import demo_root, start_agent
from tests.integration.monitoring_records import Identity, ReferenceRow, reference_rows
from tests.integration.monitoring_traffic import (
    Exchange,
    config_for_traffic,
    drop_folder,
    exercise_every_surface,
)

pytestmark = pytest.mark.integration

IDENTITY = Identity(
    family="Zqxjwvutsrson",
    given="Quintavius",
    mrn="MRN-998877665",
    street="4217 Wexlerbrook Lane",
    city="Ostravelle",
    postal_code="QX7 9ZW",
    birth_date="1941-06-17",
)
CREATININE = 123.456789  # umol/L: a plausible, distinctive measurement
MARKER = "Vylqmorthax"  # sent where a number belongs, in the broken records
FORBIDDEN = (
    IDENTITY.family,
    IDENTITY.given,
    IDENTITY.mrn,
    "998877665",
    IDENTITY.street,
    "Wexlerbrook",
    IDENTITY.city,
    IDENTITY.postal_code,
    IDENTITY.birth_date or "",
    "19410617",  # the birth date as HL7 writes it
    "123.456789",
    MARKER,
)


def _verbose(config: dict[str, Any]) -> None:
    config_for_traffic(config)
    config["logging"]["level"] = "DEBUG"


@dataclass(frozen=True)
class Seen:
    """Everything the agent produced while and after handling the patient."""

    exchanges: list[Exchange]
    metrics: str
    status_page: str
    log: str
    audit: str
    drop_outputs: dict[Path, str]
    originals: dict[Path, str]  # the sender's files, as moved to processed/ and failed/


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seen]:
    agent = start_agent(demo_root(tmp_path_factory.mktemp("phi"), _verbose))
    try:
        base = reference_rows()[3]
        row = ReferenceRow({**base.values, "creatinine": CREATININE}, base.sex)
        exchanges = exercise_every_surface(agent, row, IDENTITY, MARKER)
        with agent.client() as client:
            metrics = client.get("/metrics").text
            status_page = client.get("/").text
    finally:
        assert agent.stop() == 0, agent.log_text()
    audit = agent.config_path.parent / "../var/demo/audit.jsonl"
    written = [
        *drop_folder(agent, "outbox").iterdir(),
        *drop_folder(agent, "failed").glob("*.error.json"),
        *(p for p in drop_folder(agent, "state").rglob("*") if p.is_file()),
    ]
    yield Seen(
        exchanges,
        metrics,
        status_page,
        agent.log_text(),
        audit.read_text(),
        {p: p.read_text(errors="replace") for p in written},
        {
            p: p.read_text(errors="replace")
            for folder in ("processed", "failed")
            for p in drop_folder(agent, folder).iterdir()
            if not p.name.endswith(".error.json")
        },
    )


def _leaks(text: str) -> list[str]:
    return [s for s in FORBIDDEN if s in text]


OWN_REFERENCES = (IDENTITY.mrn, "998877665")  # PID-3: the sender's name for its patient


def _leaks_to_sender(text: str) -> list[str]:
    """What must not reach even the sender: all but its own reference to the patient."""
    return [s for s in _leaks(text) if s not in OWN_REFERENCES]


def test_every_surface_was_exercised(seen: Seen) -> None:
    """The traffic reached the agent and took each path it was meant to (else the absence of
    leaks below would prove little)."""
    statuses = {e.surface: e.status for e in seen.exchanges}
    assert statuses["http fhir bundle"] == statuses["http hl7"] == "200"
    assert statuses["http fhir invalid value"] == statuses["http hl7 invalid value"] == "400"
    assert statuses["http fhir unmappable"] == statuses["http hl7 unmappable"] == "422"
    assert statuses["oip"] == statuses["cds hooks"] == "200"
    assert statuses["oip not numbers"] == statuses["cds hooks invalid value"] == "400"
    assert statuses["cds hooks unmappable"] == "422"
    assert [statuses[f"mllp{s}"] for s in ("", " unmappable", " invalid value", " not hl7")] == [
        "AA",
        "AE",
        "AR",
        "AR",
    ]
    names = {p.name for p in seen.drop_outputs}
    assert {
        "records.ndjson.report.json",
        "messages.hl7.results.ndjson",
        "features.csv.results.csv",
        "unreadable.bin.error.json",
    } <= names
    assert '"outcome":"ok"' in seen.audit.replace(" ", "")
    assert '"level": "debug"' in seen.log
    # the strings looked for below were really sent
    assert set(FORBIDDEN) == {s for text in seen.originals.values() for s in _leaks(text)}


def test_no_patient_data_in_metrics(seen: Seen) -> None:
    assert _leaks(seen.metrics) == []


def test_no_patient_data_on_the_status_page(seen: Seen) -> None:
    assert _leaks(seen.status_page) == []


def test_no_patient_data_in_the_log(seen: Seen) -> None:
    leaked = [line for line in seen.log.splitlines() if _leaks(line)]
    assert leaked == []


def test_no_patient_data_in_the_audit_log(seen: Seen) -> None:
    assert _leaks(seen.audit) == []


@pytest.mark.parametrize("kind", ["error", "success"])
def test_no_patient_data_in_answers(seen: Seen, kind: str) -> None:
    """Error answers (OperationOutcomes, OIP and CDS errors, AE/AR ACKs) name a path and a
    reason, never a value; successful ones carry outputs, not inputs."""
    answers = [e for e in seen.exchanges if (e.status in {"200", "AA"}) == (kind == "success")]
    assert answers
    leaked = {e.surface: _leaks_to_sender(e.answer) for e in answers}
    assert {surface: found for surface, found in leaked.items() if found} == {}


def test_answers_name_each_patient_by_the_senders_own_reference(seen: Seen) -> None:
    answers = {e.surface: e.answer for e in seen.exchanges}
    assert IDENTITY.mrn in answers["http hl7"]  # PID-3, as the sender wrote it


def test_no_patient_data_in_drop_folder_outputs(seen: Seen) -> None:
    leaked = {p.name: _leaks_to_sender(text) for p, text in seen.drop_outputs.items()}
    assert {name: found for name, found in leaked.items() if found} == {}


def test_drop_folder_results_carry_the_senders_own_labels(seen: Seen) -> None:
    by_name = {p.name: text for p, text in seen.drop_outputs.items()}
    assert '"label":"Patient/' in by_name["records.ndjson.results.ndjson"]
    assert '"label":"MSG-DROP-1"' in by_name["messages.hl7.results.ndjson"]
    assert '"label":"row-1"' in by_name["features.csv.results.ndjson"]
