"""The inputs every contender gets: the demo patient's FHIR Bundle (1 Patient, 30
Observations), a small vitals Bundle built from the FHIR R4 specification's own examples
(1 Patient, 5 vital-sign Observations), N distinct copies of the first for batches, and an
HL7 v2 ORU^R01 with 30 OBX."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE_PATH = REPO / "fixtures" / "fhir" / "demo-patient-bundle.json"
ORU_PATH = REPO / "fixtures" / "hl7" / "oru-r01-v25.hl7"
SPEC_EXAMPLES = REPO / "fixtures" / "external" / "fhir"  # CC0, see SOURCES.md there
SPEC_PATIENT = "patient-example-f001-pieter.json"
SPEC_VITALS = (
    "observation-example-heart-rate.json",
    "observation-example-respiratory-rate.json",
    "observation-example-body-temperature.json",
    "observation-example-bloodpressure.json",
    "observation-example-satO2.json",
)
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


def vitals_bundle() -> bytes:
    """The R4 specification's Patient f001 and its five vital-sign examples (heart rate,
    respiratory rate, body temperature, blood-pressure panel, SpO2) as one collection Bundle,
    as ``json.dumps`` writes it (about 14 kB). Two edits, nothing else: each Observation's
    subject (``Patient/example``, not among the stored examples) is pointed at f001, and its
    time (1999 to 2014 in the examples) moved into the hour before ``AS_OF``, so that the
    demo site's 24 h look-back windows hold it and every contender scores it."""
    patient = json.loads((SPEC_EXAMPLES / SPEC_PATIENT).read_bytes())
    observations = [json.loads((SPEC_EXAMPLES / name).read_bytes()) for name in SPEC_VITALS]
    for rank, observation in enumerate(observations, start=1):
        observation["subject"] = {"reference": f"Patient/{patient['id']}"}
        when = AS_OF - timedelta(minutes=10 * rank)
        observation["effectiveDateTime"] = when.isoformat(timespec="seconds")
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource} for resource in (patient, *observations)],
    }
    return json.dumps(bundle).encode()


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
