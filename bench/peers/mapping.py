"""Plain-Python FHIR-to-features mapping, as a team writes it inside its own service.

LOINC code lookups, the latest value at or before ``as_of`` (a systolic pressure may sit
in a blood-pressure panel's component), age from ``birthDate``, sex from ``gender``, the
training median for a missing lab. No unit conversion (the demo site already sends the
model's units) and no look-back windows: the usual shortcuts, which the agent does not take.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

LOINC = "http://loinc.org"
CODES: dict[str, str] = {
    "8867-4": "heart_rate",
    "9279-1": "respiratory_rate",
    "8310-5": "body_temperature",
    "8331-1": "body_temperature",
    "8480-6": "systolic_bp",
    "59408-5": "spo2",
    "2708-6": "spo2",
    "6690-2": "wbc",
    "26464-8": "wbc",
    "14682-9": "creatinine",
    "2160-0": "creatinine",
}
LABS = frozenset({"wbc", "creatinine"})
SEXES = ("female", "male")


class Unmappable(ValueError):
    """The bundle lacks a vital sign or the patient's age or sex (answered with HTTP 422)."""


def _loinc(concept: dict[str, Any]) -> str | None:
    for coding in concept.get("coding", ()):
        if coding.get("system") == LOINC and coding.get("code") in CODES:
            return str(coding["code"])
    return None


def features(
    bundle: dict[str, Any], as_of: datetime, medians: dict[str, float], order: tuple[str, ...]
) -> list[float]:
    """The model's input row (in ``order``) for a one-patient Bundle as at ``as_of``."""
    latest: dict[str, tuple[datetime, float]] = {}
    patient: dict[str, Any] | None = None
    for entry in bundle.get("entry", ()):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Patient":
            patient = resource
            continue
        if resource.get("resourceType") != "Observation":
            continue
        when = datetime.fromisoformat(resource.get("effectiveDateTime", "1900-01-01T00:00Z"))
        if when > as_of:
            continue
        for part in (resource, *resource.get("component", ())):
            code = _loinc(part.get("code", {}))
            value = part.get("valueQuantity", {}).get("value")
            if code is None or value is None:
                continue
            name = CODES[code]
            if name not in latest or latest[name][0] <= when:
                latest[name] = (when, float(value))
    if patient is None or "birthDate" not in patient or patient.get("gender") not in SEXES:
        raise Unmappable("the bundle has no Patient with birthDate and gender")
    born = date.fromisoformat(patient["birthDate"])
    day = as_of.date()
    values = {name: found[1] for name, found in latest.items()} | {
        "age": float(day.year - born.year - ((day.month, day.day) < (born.month, born.day))),
        "sex": 1.0 if patient["gender"] == "male" else 0.0,
    }
    row = []
    for name in order:
        if name in values:
            row.append(values[name])
        elif name in LABS:
            row.append(medians[name])
        else:
            raise Unmappable(f"no value for {name}")
    return row


def parse_as_of(text: str | None) -> datetime:
    """``as_of`` query parameter (ISO 8601, ``Z`` allowed); now when absent."""
    if not text:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
