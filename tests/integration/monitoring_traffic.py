"""Traffic through every surface of the real agent: HTTP (FHIR JSON and NDJSON, HL7 v2), the
Open Inference Protocol, CDS Hooks, MLLP and the drop folder, each with valid records, broken
ones and ones that parse but cannot be mapped. Used to fill /metrics for the monitoring tests
and to look for patient data where none may be.

``exercise_every_surface`` returns what came back (response bodies, ACKs) so that the caller
can inspect it; the drop folder's outputs are on disk under the config's folders. The agent
must run with ``config_for_traffic`` applied (MLLP on a free port, a fast drop folder).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.integration.agent_process import AgentProcess, free_port
from tests.integration.monitoring_records import (
    NDJSON,
    PREDICT,
    Identity,
    ReferenceRow,
    bundle,
    hl7_message,
    patient_resources,
)

FHIR_JSON = "application/fhir+json"
HL7 = "x-application/hl7-v2+er7"
CDS_SERVICE = "/cds-services/deterioration-risk"
OIP_INFER = "/v2/models/deterioration/infer"
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"


def config_for_traffic(config: dict[str, Any]) -> None:
    """MLLP on a free port (the demo's 2575 may be taken) and a drop folder that takes a
    file as soon as it is renamed in, with every output kind."""
    config["mllp"]["port"] = free_port()
    config["drop_folder"].update(
        settle_seconds=0.2, poll_interval=0.3, outputs=["ndjson", "csv", "fhir"]
    )


@dataclass(frozen=True)
class Exchange:
    """One request to the agent and what it answered."""

    surface: str
    status: str  # HTTP status code or MSA-1
    answer: str


def _http(agent: AgentProcess, surface: str, path: str, body: bytes, content_type: str) -> Exchange:
    with agent.client() as client:
        response = client.post(path, content=body, headers={"Content-Type": content_type})
    return Exchange(surface, str(response.status_code), response.text)


def mllp_send(host: str, port: int, message: bytes, timeout: float = 10.0) -> bytes:
    """Send one framed message; return the first ACK frame's content."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(START_BLOCK + message + END_BLOCK)
        received = b""
        while END_BLOCK not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received.removeprefix(START_BLOCK).split(END_BLOCK)[0]


def _msa_code(ack: bytes) -> str:
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA|"):
            return segment.split(b"|")[1].decode()
    return ""


def _config(agent: AgentProcess) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(agent.config_path.read_text())
    return config


def drop_folder(agent: AgentProcess, key: str) -> Path:
    """A drop-folder path of the running agent's config (inbox, outbox, failed...)."""
    folder: str = _config(agent)["drop_folder"][key]
    return (agent.config_path.parent / folder).resolve()


def _drop(agent: AgentProcess, name: str, content: bytes) -> None:
    """Write as senders should: a dot-named temporary file, then a rename into the inbox."""
    inbox = drop_folder(agent, "inbox")
    inbox.mkdir(parents=True, exist_ok=True)
    temporary = inbox / f".{name}.tmp"
    temporary.write_bytes(content)
    temporary.rename(inbox / name)


def wait_for_drop_folder(agent: AgentProcess, names: list[str], timeout: float = 20.0) -> None:
    """Until every dropped file has left the inbox and has a report or an error file."""
    outbox, failed = drop_folder(agent, "outbox"), drop_folder(agent, "failed")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [
            (outbox / f"{n}.report.json").exists() or (failed / f"{n}.error.json").exists()
            for n in names
        ]
        if all(done):
            return
        time.sleep(0.1)
    raise AssertionError(f"drop folder did not finish {names} within {timeout}s")


def _observation_with_value(patient_id: str, value: object) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-03-15T10:00:00+00:00",
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def exercise_every_surface(
    agent: AgentProcess, row: ReferenceRow, identity: Identity, marker: str
) -> list[Exchange]:
    """Send ``row`` about ``identity`` through every surface, valid and broken; ``marker`` is
    a distinctive text (not a number) that the broken records carry where a number belongs.
    Waits for the drop folder to finish. Returns every HTTP answer and MLLP ACK."""
    now = datetime.now(UTC)
    recent = (now - timedelta(hours=1)).isoformat()
    exchanges: list[Exchange] = []
    resources = patient_resources(row, identity)
    patient_id = str(resources[0]["id"])
    bare_patient = [resources[0]]  # no observations: parses, cannot be mapped

    # HTTP FHIR and HL7, at the fixtures' clinical time
    http_cases: list[tuple[str, bytes, str]] = [
        ("http fhir bundle", bundle(resources), FHIR_JSON),
        ("http fhir ndjson", b"\n".join(json.dumps(r).encode() for r in resources), NDJSON),
        ("http fhir unmappable", bundle(bare_patient), FHIR_JSON),
        (
            "http fhir invalid value",
            bundle([resources[0], _observation_with_value(patient_id, marker)]),
            FHIR_JSON,
        ),
        (
            "http fhir invalid json",
            f'{{"resourceType": "Patient", "name": "{marker}"'.encode(),
            FHIR_JSON,
        ),
        ("http unsupported media type", marker.encode(), "text/plain"),
        (
            "http hl7",
            hl7_message(row, "MSG-HTTP-1", datetime(2026, 3, 15, 10, tzinfo=UTC), identity),
            HL7,
        ),
        (
            "http hl7 unmappable",
            hl7_message(row, "MSG-HTTP-2", datetime(2026, 3, 1, tzinfo=UTC), identity),
            HL7,
        ),
        (
            "http hl7 invalid value",
            hl7_message(row, "MSG-HTTP-3", datetime(2026, 3, 15, 10, tzinfo=UTC), identity).replace(
                b"|NM|8867-4^Heart rate^LN||", f"|NM|8867-4^Heart rate^LN||{marker}".encode(), 1
            ),
            HL7,
        ),
    ]
    exchanges += [_http(agent, name, PREDICT, body, media) for name, body, media in http_cases]
    unknown = PREDICT.replace("deterioration", "no-such-model")
    exchanges.append(_http(agent, "http unknown model", unknown, bundle(resources), FHIR_JSON))

    # Open Inference Protocol: raw feature rows in manifest order (sex as its level index),
    # a value the reference lacks sent as null (missing: the mapping imputes it; a 0.0 would
    # be refused as out of range)
    features: list[float | None] = [*row.values.values(), 0.0 if row.sex == "female" else 1.0]
    oip_cases: list[tuple[str, dict[str, Any]]] = [
        ("oip", {"inputs": [{"name": "X", "shape": [1, 9], "datatype": "FP64", "data": features}]}),
        (
            "oip wrong shape",
            {"inputs": [{"name": marker, "shape": [1, 8], "datatype": "FP64", "data": features}]},
        ),
        (
            "oip not numbers",
            {"inputs": [{"name": "X", "shape": [1, 9], "datatype": "FP64", "data": [marker] * 9}]},
        ),
    ]
    exchanges += [
        _http(agent, name, OIP_INFER, json.dumps(body).encode(), "application/json")
        for name, body in oip_cases
    ]

    # CDS Hooks: scored now, so the observations must be recent
    def cds(observed_at: str, extra: tuple[dict[str, object], ...] = ()) -> bytes:
        prefetch_resources = patient_resources(row, identity, observed_at) + list(extra)
        return json.dumps(
            {
                "hook": "patient-view",
                "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": {
                    "userId": "Practitioner/example",
                    "patientId": prefetch_resources[0]["id"],
                },
                "prefetch": {
                    "patient": prefetch_resources[0],
                    "observations": {
                        "resourceType": "Bundle",
                        "type": "searchset",
                        "entry": [{"resource": r} for r in prefetch_resources[1:]],
                    },
                },
            }
        ).encode()

    exchanges += [
        _http(agent, "cds hooks", CDS_SERVICE, cds(recent), "application/json"),
        _http(
            agent,
            "cds hooks unmappable",
            CDS_SERVICE,
            cds("2026-03-01T00:00:00Z"),
            "application/json",
        ),
        _http(
            agent,
            "cds hooks invalid value",
            CDS_SERVICE,
            cds(recent, (_observation_with_value(patient_id, marker),)),
            "application/json",
        ),
        _http(agent, "cds hooks not json", CDS_SERVICE, marker.encode(), "application/json"),
    ]

    # MLLP, scored now
    mllp = _config(agent)["mllp"]
    mllp_cases = [
        ("mllp", hl7_message(row, "MSG-MLLP-1", now - timedelta(hours=1), identity)),
        ("mllp unmappable", hl7_message(row, "MSG-MLLP-2", now - timedelta(days=30), identity)),
        (
            "mllp invalid value",
            hl7_message(row, "MSG-MLLP-3", now - timedelta(hours=1), identity).replace(
                b"|NM|8867-4^Heart rate^LN||", f"|NM|8867-4^Heart rate^LN||{marker}".encode(), 1
            ),
        ),
        ("mllp not hl7", f"{identity.family} {identity.mrn} {marker}".encode()),
    ]
    for name, message in mllp_cases:
        ack = mllp_send(mllp["host"], int(mllp["port"]), message)
        exchanges.append(Exchange(name, _msa_code(ack), ack.decode("iso-8859-1")))

    # the drop folder, scored now: NDJSON with a good patient, an unmappable one and a broken
    # line; HL7 messages; a feature CSV with a broken cell; a file that is no format at all
    good = patient_resources(row, identity, recent)
    lines = [json.dumps(r) for r in good + bare_patient] + [f'{{"name": "{marker}"']
    names = ["records.ndjson", "messages.hl7", "features.csv", "unreadable.bin"]
    _drop(agent, names[0], "\n".join(lines).encode() + b"\n")
    _drop(
        agent,
        names[1],
        hl7_message(row, "MSG-DROP-1", now - timedelta(hours=1), identity)
        + hl7_message(row, "MSG-DROP-2", now - timedelta(hours=1), identity).replace(
            b"|NM|8867-4^Heart rate^LN||", f"|NM|8867-4^Heart rate^LN||{marker}".encode(), 1
        ),
    )
    header = ",".join([*row.values.keys(), "sex", "label"])
    cells = ["" if v is None else f"{v:g}" for v in features]  # an empty cell is missing
    csv_rows = [",".join(cells) + ",row-1", ",".join([marker, *cells[1:]]) + ",row-2"]
    _drop(agent, names[2], "\n".join([header, *csv_rows]).encode() + b"\n")
    _drop(agent, names[3], f"\x00\x01{identity.family} {identity.mrn} {marker}".encode())
    wait_for_drop_folder(agent, names)
    return exchanges
