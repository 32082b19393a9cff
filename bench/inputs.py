"""The inputs every contender gets: the demo patient's FHIR Bundle (1 Patient, 30
Observations), N distinct copies of it for batches, and an HL7 v2 ORU^R01 with 30 OBX."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE_PATH = REPO / "fixtures" / "fhir" / "demo-patient-bundle.json"
ORU_PATH = REPO / "fixtures" / "hl7" / "oru-r01-v25.hl7"
AS_OF_TEXT = "2026-03-15T12:00:00Z"
AS_OF = datetime(2026, 3, 15, 12, tzinfo=UTC)
OBSERVATIONS = 30


def demo_bundle() -> bytes:
    """The fixture bundle, checked to hold one Patient and ``OBSERVATIONS`` Observations."""
    body = BUNDLE_PATH.read_bytes()
    kinds = [e["resource"]["resourceType"] for e in json.loads(body)["entry"]]
    if kinds.count("Observation") != OBSERVATIONS or kinds.count("Patient") != 1:
        raise ValueError(
            f"{BUNDLE_PATH.name} no longer holds 1 Patient and {OBSERVATIONS} Observations"
        )
    return body


def patient_bundles(count: int, shift: timedelta = timedelta(0)) -> list[bytes]:
    """``count`` copies of the demo bundle as distinct patients (ids and references renamed),
    compact JSON, one per NDJSON line. ``shift`` moves every observation time, so that a
    scorer whose look-back windows end *now* (the drop folder) sees them as recent."""
    document = json.loads(demo_bundle())
    for entry in document["entry"]:
        resource = entry["resource"]
        for key in ("effectiveDateTime", "issued"):
            if key in resource:
                resource[key] = (datetime.fromisoformat(resource[key]) + shift).isoformat()
    text = json.dumps(document, separators=(",", ":"))
    patient_id = document["entry"][0]["resource"]["id"]
    return [text.replace(patient_id, f"{patient_id[:-6]}{i:06d}").encode() for i in range(count)]


def oru_30_obx() -> bytes:
    """The ORU^R01 fixture (35 OBX) without its 5 diastolic pressures, which the model does
    not read: ``OBSERVATIONS`` OBX segments covering every feature."""
    segments = ORU_PATH.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    kept = [s for s in segments if s and not (s.startswith(b"OBX|") and b"|8462-4^" in s)]
    obx = sum(s.startswith(b"OBX|") for s in kept)
    if obx != OBSERVATIONS:
        raise ValueError(f"{ORU_PATH.name} no longer gives {OBSERVATIONS} OBX segments")
    return b"\r".join(kept) + b"\r"
