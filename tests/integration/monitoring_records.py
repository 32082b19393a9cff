"""FHIR records for the monitoring tests, built from rows of the demo model's training
reference (fixtures/demo/reference.csv), so that what the agent sees is distributed as what
the model was trained on, unless a test changes it on purpose.

One row becomes one Patient (gender, a birth date giving the row's age at ``AS_OF``) and one
Observation per present feature, LOINC-coded with UCUM units as the demo site mapping
(config/mappings/demo-site.yaml) expects: as FHIR R4 resources (many rows go out as one NDJSON
body) or as an HL7 v2.5 ORU^R01 message. An ``Identity`` gives the patient a name, a medical
record number and an address, for the tests that look for them where they must not be.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
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
# the demo model's inputs in manifest order: the Observations' features, then the Patient's
FEATURES = (*OBSERVATIONS, "age", "sex")


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


@dataclass(frozen=True)
class Identity:
    """Who the record is about: what a hospital's records carry beside the measurements."""

    family: str
    given: str
    mrn: str
    street: str
    city: str
    postal_code: str
    birth_date: str | None = None  # YYYY-MM-DD; None: derived from the row's age

    def fhir(self) -> dict[str, object]:
        """Patient fields: name, MRN identifier, address (birthDate is set separately)."""
        return {
            "identifier": [{"system": "http://hospital.example.org/fhir/mrn", "value": self.mrn}],
            "name": [{"family": self.family, "given": [self.given]}],
            "address": [{"line": [self.street], "city": self.city, "postalCode": self.postal_code}],
        }


def _birth_date(row: ReferenceRow, identity: Identity | None) -> str:
    if identity is not None and identity.birth_date is not None:
        return identity.birth_date
    age = row.values["age"]
    assert age is not None
    return f"{2026 - int(age)}-01-01"  # has turned `age` by AS_OF (and by any later date)


def patient_resources(
    row: ReferenceRow, identity: Identity | None = None, observed_at: str = OBSERVED_AT
) -> list[dict[str, object]]:
    """The row's Patient and Observations as FHIR R4 resources, observed at ``observed_at``
    (ISO 8601; within the look-back window of the time the record is scored at)."""
    patient_id = str(uuid.uuid4())
    resources: list[dict[str, object]] = [
        {
            "resourceType": "Patient",
            "id": patient_id,
            "gender": row.sex,
            "birthDate": _birth_date(row, identity),
            **(identity.fhir() if identity is not None else {}),
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
                "effectiveDateTime": observed_at,
                "valueQuantity": {
                    "value": value,
                    "unit": unit,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        )
    return resources


def bundle(resources: list[dict[str, object]]) -> bytes:
    """One patient's resources as a FHIR collection Bundle (JSON)."""
    entries = [{"resource": r} for r in resources]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


def hl7_message(
    row: ReferenceRow, control_id: str, observed_at: datetime, identity: Identity | None = None
) -> bytes:
    """The row as an HL7 v2.5 ORU^R01 (original acknowledgement mode), segments ending in CR."""
    stamp = observed_at.strftime("%Y%m%d%H%M%S+0000")
    name = f"{identity.family}^{identity.given}" if identity else ""
    mrn = f"{identity.mrn}^^^GENERAL_HOSP^MR" if identity else ""
    address = f"{identity.street}^^{identity.city}^^{identity.postal_code}" if identity else ""
    sex = {"female": "F", "male": "M"}[row.sex]
    segments = [
        f"MSH|^~\\&|MONITOR|GENERAL_HOSP|EDGE_AGENT|GENERAL_HOSP|{stamp}||ORU^R01^ORU_R01|"
        f"{control_id}|P|2.5",
        f"PID|1||{mrn}||{name}||{_birth_date(row, identity).replace('-', '')}|{sex}|||{address}",
        f"OBR|1|ORD-{control_id}|FIL-{control_id}|8716-3^Vital signs^LN|||{stamp}",
    ]
    for position, (feature, (code, display, unit)) in enumerate(OBSERVATIONS.items(), 1):
        value = row.values[feature]
        if value is not None:
            segments.append(
                f"OBX|{position}|NM|{code}^{display}^LN||{value:.10g}|{unit}^{unit}^UCUM|||||F|||{stamp}"
            )
    return ("\r".join(segments) + "\r").encode()


def ndjson(rows: Iterable[ReferenceRow]) -> bytes:
    """Many patients in one NDJSON body: the agent scores one record per patient."""
    lines = [json.dumps(r) for row in rows for r in patient_resources(row)]
    return ("\n".join(lines) + "\n").encode()


def celsius_read_as_fahrenheit(row: ReferenceRow) -> ReferenceRow:
    """The units mix-up: the body temperature converted to degF but still labelled Cel."""
    celsius = row.values["body_temperature"]
    assert celsius is not None
    return ReferenceRow({**row.values, "body_temperature": round(celsius * 9 / 5 + 32, 1)}, row.sex)
