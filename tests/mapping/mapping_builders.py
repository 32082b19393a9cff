"""Builders for the mapping tests: the same clinical facts written as FHIR (LOINC or local
codes, one Bundle or NDJSON lines) or as an HL7 v2.5 ORU^R01."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FHIR = ROOT / "fixtures" / "fhir"
HL7 = ROOT / "fixtures" / "hl7"
MAPPINGS = ROOT / "config" / "mappings"
AS_OF = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # the fixtures' clinical "now"

# name, unit, min, max, training median
NUMERIC = [
    ("heart_rate", "/min", 20, 250, 84.0),
    ("respiratory_rate", "/min", 4, 60, 18.0),
    ("body_temperature", "Cel", 30, 43, 36.9),
    ("systolic_bp", "mm[Hg]", 50, 260, 126.0),
    ("spo2", "%", 50, 100, 96.0),
    ("wbc", "10*9/L", 0.1, 100, 8.1),
    ("creatinine", "umol/L", 20, 2000, 88.0),
    ("age", "a", 18, 110, 64.0),
]


def manifest_document() -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [
        {"name": n, "kind": "numeric", "unit": u, "min": lo, "max": hi}
        for n, u, lo, hi, _ in NUMERIC
    ]
    inputs.append({"name": "sex", "kind": "categorical", "levels": ["female", "male"]})
    features: dict[str, Any] = {n: {"count": 1000, "median": m} for n, *_, m in NUMERIC}
    features["sex"] = {"count": 1000, "category_frequencies": {"female": 0.47, "male": 0.53}}
    return {
        "name": "deterioration",
        "version": "1.0.0",
        "abi_version": 1,
        "inputs": inputs,
        "outputs": [{"name": "p_deterioration", "kind": "probability"}],
        "reference": {"rows": 1000, "features": features},
        "provenance": {
            "training_data_sha256": "0" * 64,
            "creator": "tests",
            "created": "2026-01-01T00:00:00Z",
        },
        "files": {"model.wasm": {"sha256": "0" * 64, "size": 0}},
    }


LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL = "http://hospital.example.org/fhir/CodeSystem/observations"
LOCAL_SEX = "http://hospital.example.org/fhir/StructureDefinition/administrative-sex"

# feature -> (LOINC, local code, HL7 display)
CODES = {
    "heart_rate": ("8867-4", "VS-HF", "Heart rate"),
    "respiratory_rate": ("9279-1", "VS-AF", "Respiratory rate"),
    "body_temperature": ("8310-5", "VS-TEMP", "Body temperature"),
    "systolic_bp": ("8480-6", "VS-RR-SYS", "Systolic blood pressure"),
    "spo2": ("59408-5", "VS-SPO2", "Oxygen saturation"),
    "wbc": ("6690-2", "LAB-LEUKO", "Leukocytes"),
    "creatinine": ("14682-9", "LAB-KREA", "Creatinine"),
}
UNITS = {
    "heart_rate": "/min",
    "respiratory_rate": "/min",
    "body_temperature": "Cel",
    "systolic_bp": "mm[Hg]",
    "spo2": "%",
    "wbc": "10*3/uL",
    "creatinine": "umol/L",
}
LOCAL_UNITS = {**UNITS, "body_temperature": "[degF]", "creatinine": "mg/dL"}
PANEL = ("85354-9", "VS-RR")


def to_local(feature: str, value: float) -> float:
    if feature == "body_temperature":
        return value * 9 / 5 + 32
    if feature == "creatinine":
        return value * 113.12 / 10000
    return value


@dataclass
class Facts:
    """A patient and timed values (hours before as-of, value in the model's unit)."""

    as_of: datetime
    birth_date: str = "1954-07-22"
    gender: str = "female"
    values: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def at(self, hours: float) -> datetime:
        return self.as_of - timedelta(hours=hours)


def fhir_resources(
    facts: Facts, local: bool = False, other_units: bool = False
) -> list[dict[str, Any]]:
    """Patient + Observations; systolic BP inside a blood-pressure panel. ``local``: the
    local site's codes, units and sex extension; ``other_units``: LOINC codes but
    temperature in [degF] and creatinine in mg/dL (LOINC 2160-0)."""
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "p1", "birthDate": facts.birth_date}
    if local:
        sex = {"female": "W", "male": "M"}.get(facts.gender, "D")
        patient["extension"] = [{"url": LOCAL_SEX, "valueCode": sex}]
    else:
        patient["gender"] = facts.gender
    out = [patient]
    system = LOCAL if local else LOINC
    units = LOCAL_UNITS if local or other_units else UNITS
    for feature, values in facts.values.items():
        code = CODES[feature][1 if local else 0]
        if other_units and feature == "creatinine":
            code = "2160-0"
        for i, (hours, value) in enumerate(values):
            number = to_local(feature, value) if local or other_units else value
            quantity = {
                "value": number,
                "unit": units[feature],
                "system": UCUM,
                "code": units[feature],
            }
            observation: dict[str, Any] = {
                "resourceType": "Observation",
                "id": f"{feature.replace('_', '-')}-{i}",
                "status": "final",
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": facts.at(hours).isoformat(),
            }
            if feature == "systolic_bp":
                observation["code"] = {
                    "coding": [{"system": system, "code": PANEL[1 if local else 0]}]
                }
                observation["component"] = [
                    {
                        "code": {"coding": [{"system": system, "code": code}]},
                        "valueQuantity": quantity,
                    }
                ]
            else:
                observation["code"] = {"coding": [{"system": system, "code": code}]}
                observation["valueQuantity"] = quantity
            out.append(observation)
    return out


def fhir_bundle(facts: Facts, local: bool = False, other_units: bool = False) -> bytes:
    entries = [
        {"fullUrl": f"urn:uuid:{r['id']}", "resource": r}
        for r in fhir_resources(facts, local, other_units)
    ]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


def fhir_ndjson(facts: Facts) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in fhir_resources(facts))


def hl7_oru(facts: Facts, local: bool = False) -> bytes:
    """ORU^R01 v2.5: PID, one OBR, one OBX per value (systolic as a plain OBX). ``local``:
    the local site's feed — codes in table 99OBS, temperature in the unit text "°F",
    creatinine in mg/dL."""

    def ts(hours: float) -> str:
        return facts.at(hours).strftime("%Y%m%d%H%M%S") + "+0000"

    sex = {"female": "F", "male": "M"}.get(facts.gender, "O")
    segments = [
        "MSH|^~\\&|MON|HOSP|EDGE|HOSP|" + ts(0) + "||ORU^R01^ORU_R01|CTRL1|P|2.5",
        f"PID|1||MRN1^^^HOSP^MR||Test^Pat||{facts.birth_date.replace('-', '')}|{sex}",
        f"OBR|1|||8716-3^Vital signs^LN|||{ts(0)}",
    ]
    n = 0
    for feature, values in facts.values.items():
        loinc, local_code, display = CODES[feature]
        code = f"{local_code}^{display}^99OBS" if local else f"{loinc}^{display}^LN"
        unit = LOCAL_UNITS[feature] if local else UNITS[feature]
        units = "°F" if unit == "[degF]" else f"{unit}^{unit}^UCUM"
        for hours, value in values:
            n += 1
            number = to_local(feature, value) if local else value
            segments.append(f"OBX|{n}|NM|{code}||{number!r}|{units}|||||F|||{ts(hours)}")
    return "\r".join(segments).encode()
