"""FHIR records for the monitoring tests, built from rows of the demo model's training
reference (fixtures/demo/reference.csv), so that what the agent sees is distributed as what
the model was trained on, unless a test changes it on purpose.

One row becomes one Patient (gender, a birth date giving the row's age at ``AS_OF``) and one
Observation per present feature, LOINC-coded with UCUM units as the demo site mapping
(config/mappings/demo-site.yaml) expects. Many rows go out as one NDJSON body.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE_CSV = REPO / "fixtures" / "demo" / "reference.csv"
AS_OF = "2026-03-15T12:00:00Z"  # the clinical time of the demo fixtures
OBSERVED_AT = "2026-03-15T10:00:00+00:00"  # inside every feature's look-back window
PREDICT = f"/v1/models/deterioration/predict?as_of={AS_OF}"
NDJSON = "application/fhir+ndjson"

# feature -> (LOINC code, display, UCUM unit the demo site sends)
OBSERVATIONS: dict[str, tuple[str, str, str]] = {
    "heart_rate": ("8867-4", "Heart rate", "/min"),
    "respiratory_rate": ("9279-1", "Respiratory rate", "/min"),
    "body_temperature": ("8310-5", "Body temperature", "Cel"),
    "systolic_bp": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "spo2": ("59408-5", "Oxygen saturation by pulse oximetry", "%"),
    "wbc": ("6690-2", "Leukocytes in blood", "10*3/uL"),
    "creatinine": ("14682-9", "Creatinine in serum", "umol/L"),
}


@dataclass(frozen=True)
class ReferenceRow:
    """One training row: feature name -> value (None where the reference had none)."""

    values: Mapping[str, float | None]
    sex: str


def reference_rows() -> list[ReferenceRow]:
    rows = []
    with REFERENCE_CSV.open(newline="") as f:
        for raw in csv.DictReader(f):
            values = {k: (float(v) if v != "" else None) for k, v in raw.items() if k != "sex"}
            rows.append(ReferenceRow(values, raw["sex"]))
    return rows


def patient_resources(
    row: ReferenceRow, patient: Mapping[str, object] | None = None
) -> list[dict[str, object]]:
    """The row's Patient and Observations as FHIR R4 resources. ``patient`` adds fields to
    the Patient resource (a name, an identifier, an address)."""
    patient_id = str(uuid.uuid4())
    age = row.values["age"]
    assert age is not None
    resources: list[dict[str, object]] = [
        {
            "resourceType": "Patient",
            "id": patient_id,
            "gender": row.sex,
            "birthDate": f"{2026 - int(age)}-01-01",  # turns `age` before AS_OF
            **(patient or {}),
        }
    ]
    for feature, (code, display, unit) in OBSERVATIONS.items():
        value = row.values[feature]
        if value is None:
            continue
        resources.append(
            {
                "resourceType": "Observation",
                "id": str(uuid.uuid4()),
                "status": "final",
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": code, "display": display}]
                },
                "subject": {"reference": f"Patient/{patient_id}"},
                "effectiveDateTime": OBSERVED_AT,
                "valueQuantity": {
                    "value": value,
                    "unit": unit,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        )
    return resources


def ndjson(rows: Iterable[ReferenceRow]) -> bytes:
    """Many patients in one NDJSON body: the agent scores one record per patient."""
    lines = [json.dumps(r) for row in rows for r in patient_resources(row)]
    return ("\n".join(lines) + "\n").encode()


def celsius_read_as_fahrenheit(row: ReferenceRow) -> ReferenceRow:
    """The units mix-up: the body temperature converted to degF but still labelled Cel."""
    celsius = row.values["body_temperature"]
    assert celsius is not None
    return ReferenceRow({**row.values, "body_temperature": round(celsius * 9 / 5 + 32, 1)}, row.sex)
