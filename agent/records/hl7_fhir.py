"""HL7 v2 segments to FHIR R4 resources (dicts), after the HL7 v2-to-FHIR mapping:
PID -> Patient, PV1 -> Encounter, OBX (with its OBR) -> Observation.

Only what a model can use is carried over (identifiers, name, birth date, gender; encounter
class, location and period; observation code, value, unit, time, status). Valid HL7 the
agent cannot represent (an OBX value type such as ED, a structured-numeric range) becomes an
Observation with ``dataAbsentReason = unsupported`` rather than failing the whole message;
malformed HL7 (a non-numeric NM, an impossible timestamp, an unknown status) is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.errors import FhirError, Hl7Error, NoOutcome
from agent.hl7.er7 import Er7Message, Segment
from agent.records import fhir_essential
from agent.records.config import RecordsConfig
from agent.records.hl7_tables import (
    ACT_CODE,
    GENDER,
    OBSERVATION_STATUS,
    PATIENT_CLASS,
    UCUM,
    UCUM_NAMES,
    VALUE_TYPES,
)
from agent.types import PatientRecord

SUPPORTED_TYPES = {("ADT", "A01"), ("ADT", "A04"), ("ADT", "A08"), ("ORU", "R01")}

_NM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_DTM = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?P<f>\.\d{1,4})?(?P<tz>[+-]\d{4})?$"
)
_COMPARATORS = {"": None, "=": None, "<": "<", ">": ">", "<=": "<=", ">=": ">="}
_DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous"}


@dataclass
class _Patient:
    patient: dict[str, Any] | None = None
    observations: list[dict[str, Any]] = field(default_factory=list)
    encounters: list[dict[str, Any]] = field(default_factory=list)


def message_to_records(message: Er7Message, config: RecordsConfig) -> list[PatientRecord]:
    """One record per PID in the message (an ORU may carry several patients). Segments
    before the first PID name no patient: refused as ``no_subject`` when the message has a
    PID elsewhere; a message without any PID has no patient at all (``no_patient``)."""
    if message.message_type not in SUPPORTED_TYPES:
        raise Hl7Error(
            "segment MSH #1, field MSH-9: message type not supported "
            "(ADT^A01, ADT^A04, ADT^A08, ORU^R01)"
        )
    zone = ZoneInfo(config.hl7_timezone)
    groups: list[_Patient] = []
    order: Segment | None = None  # the OBR whose OBR-7 times the OBX after it
    for segment in message.segments:
        if segment.name == "PID":
            patient = _patient(segment, f"pid-{len(groups) + 1}", zone)
            groups.append(_Patient(patient=_validated(patient, segment)))
            order = None
            continue
        if segment.name not in ("PV1", "OBR", "OBX"):
            continue
        if not groups:
            groups.append(_Patient())  # segments before any PID: no patient to score
        group = groups[-1]
        subject = group.patient["id"] if group.patient else None
        if segment.name == "PV1":
            encounter = _encounter(segment, f"pv1-{segment.position}", subject, zone)
            group.encounters.append(_validated(encounter, segment))
        elif segment.name == "OBR":
            _datetime(segment, 7, zone)  # a date/time, however precise: checked here
            order = segment
        else:
            visit = group.encounters[-1]["id"] if group.encounters else None
            observation = _observation(segment, subject, visit, order, config, zone)
            group.observations.append(_validated(observation, segment))
    label = message.control_id
    identified = [g for g in groups if g.patient is not None]
    if not identified:
        return []  # no PID: nobody to score (no_patient), whatever else the message holds
    return [
        PatientRecord(
            patient=g.patient,
            observations=tuple(g.observations),
            encounters=tuple(g.encounters),
            label=label if len(groups) == 1 else f"{label}#{i}",
            source="hl7v2",
            subject=_subject(g.patient),
            problem=None
            if g.patient is not None
            else "OBX or PV1 segments before any PID: they name no patient",
        )
        for i, g in enumerate(groups, start=1)
    ]


def _validated(resource: dict[str, Any], segment: Segment) -> dict[str, Any]:
    """``resource``, made from ``segment``, checked by the same R4 datatype rules as FHIR a
    sender writes (``fhir_essential``: what mapping reads), so a field the conversion
    carried over unchecked cannot reach a feature in a shape FHIR input could not."""
    try:
        where = f"segment {segment.name} #{segment.position}, element {resource['resourceType']}"
        fhir_essential.validate(resource, where)
    except FhirError as exc:
        raise Hl7Error(str(exc)) from None
    return resource


def _subject(patient: dict[str, Any] | None) -> dict[str, Any] | None:
    """The patient as a FHIR Reference by its first PID-3 identifier (the MRN the sender
    knows it by): what RiskAssessment.subject and the answer carry."""
    identifiers = (patient or {}).get("identifier") or []
    if not identifiers or not identifiers[0].get("value"):
        return None
    identifier = {k: v for k, v in identifiers[0].items() if k in ("system", "value")}
    return {"identifier": identifier}


def pid_reference(segment: Segment) -> str | None:
    """The value of the first PID-3 identifier: what a record of this PID is named by
    (``PatientRecord.reference``), so what its prediction is kept under and an outcome
    about the patient must name."""
    identifiers = _identifiers(segment)
    return str(identifiers[0]["value"]) if identifiers else None


def _identifiers(segment: Segment) -> list[dict[str, Any]]:
    """PID-3's identifiers with a value (CX-1), in order, as FHIR Identifiers."""
    identifiers = []
    for raw in segment.repetitions(3):
        cx = segment.components(raw, 3)
        if not cx[0]:
            continue
        identifier: dict[str, Any] = {"value": cx[0]}
        if len(cx) > 4 and cx[4]:
            identifier["type"] = {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": cx[4]}
                ]
            }
        if len(cx) > 3 and cx[3]:
            identifier["assigner"] = {"display": cx[3]}
        identifiers.append(identifier)
    return identifiers


def hl7_instant(segment: Segment, number: int, zone: ZoneInfo) -> datetime | None:
    """A TS/DTM field as the aware instant an outcome happened (a date alone is its midnight
    in ``zone``, as an outcome's ISO date is over HTTP), None when empty; Hl7Error when it is
    not an HL7 date/time, NoOutcome when it names only a year or a month: no instant to
    bound the predictions it labels."""
    text = _datetime(segment, number, zone)
    if text is None:
        return None
    if len(text) < len("YYYY-MM-DD"):
        raise NoOutcome(f"{segment.where(number)}: a time of only a year or a month")
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _datetime(
    segment: Segment, number: int, zone: ZoneInfo, *, observed: bool = False
) -> str | None:
    """HL7 TS/DTM -> FHIR dateTime at the precision given; a time without an offset is
    read in the configured zone. ``observed``: the time a value was taken (OBX-14, OBR-7),
    which look-back windows and ``latest`` order by. One that names no minute (a day, an
    hour) becomes its day, a FHIR date: FHIR's dateTime cannot carry an hour, and the
    mapping refuses a value dated only to its day where the day cannot place it (a window's
    edge, another value that day to order it against) rather than read it as midnight."""
    text = segment.value(number, 1).strip()
    if not text:
        return None
    match = _DTM.match(text)
    if match is None or (match["h"] is None and match["tz"] is not None):
        raise Hl7Error(f"{segment.where(number)}: not an HL7 date/time")
    parts = match.groupdict()
    if parts["h"] is None or (observed and parts["mi"] is None):
        date = "-".join(p for p in (parts["y"], parts["mo"], parts["d"]) if p)
        if parts["mo"] and not 1 <= int(parts["mo"]) <= 12:
            raise Hl7Error(f"{segment.where(number)}: not an HL7 date/time")
        if parts["d"]:
            _checked(segment, number, int(parts["y"]), int(parts["mo"]), int(parts["d"]))
        return date
    micro = int((parts["f"] or ".0")[1:].ljust(6, "0"))
    local = _checked(
        segment,
        number,
        int(parts["y"]),
        int(parts["mo"]),
        int(parts["d"]),
        int(parts["h"]),
        int(parts["mi"] or 0),
        int(parts["s"] or 0),
        micro,
    )
    if parts["tz"]:
        sign = 1 if parts["tz"][0] == "+" else -1
        hours, minutes = int(parts["tz"][1:3]), int(parts["tz"][3:5])
        if minutes > 59:  # +0160 is no offset, not +02:00 (the range is FHIR's rule)
            raise Hl7Error(f"{segment.where(number)}: not an HL7 date/time")
        offset = sign * (hours * 60 + minutes)
        stamp = local.isoformat()
        return f"{stamp}{'+' if offset >= 0 else '-'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return local.replace(tzinfo=zone).isoformat()


def _checked(
    segment: Segment,
    number: int,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    micro: int = 0,
) -> datetime:
    try:
        return datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        raise Hl7Error(f"{segment.where(number)}: not an HL7 date/time") from None


def _codeable(
    segment: Segment, number: int, comps: list[str], config: RecordsConfig
) -> dict[str, Any]:
    """CE/CWE/CNE -> CodeableConcept: the primary (1-3) and alternate (4-6) codings."""
    codings = []
    for code_at, display_at, system_at in ((0, 1, 2), (3, 4, 5)):
        code = comps[code_at] if len(comps) > code_at else ""
        if not code:
            continue
        coding: dict[str, Any] = {"code": code}
        system = comps[system_at] if len(comps) > system_at else ""
        if system:
            coding["system"] = config.coding_system(system)
        if len(comps) > display_at and comps[display_at]:
            coding["display"] = comps[display_at]
        codings.append(coding)
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    text = comps[8] if len(comps) > 8 and comps[8] else (comps[1] if len(comps) > 1 else "")
    if text:
        concept["text"] = text
    if not concept:
        raise Hl7Error(f"{segment.where(number)}: coded element has no code and no text")
    return concept


def _patient(segment: Segment, resource_id: str, zone: ZoneInfo) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": resource_id}
    identifiers = _identifiers(segment)
    if not identifiers:  # a result could not be filed, nor an answer matched, to anyone
        raise Hl7Error(f"{segment.where(3)}: no identifier (CX.1) in any repetition")
    patient["identifier"] = identifiers
    names = []
    for raw in segment.repetitions(5):
        xpn = segment.components(raw, 5) + [""] * 7
        name: dict[str, Any] = {}
        if xpn[6] in _NAME_USE:
            name["use"] = _NAME_USE[xpn[6]]
        if xpn[0]:
            name["family"] = xpn[0]
        given = [g for g in (xpn[1], xpn[2]) if g]
        if given:
            name["given"] = given
        if xpn[3]:
            name["suffix"] = [xpn[3]]
        if xpn[4]:
            name["prefix"] = [xpn[4]]
        if len(name) > ("use" in name):
            names.append(name)
    if names:
        patient["name"] = names
    birth = _datetime(segment, 7, zone)
    if birth:
        patient["birthDate"] = birth[:10]
    sex = segment.value(8)
    if sex:
        if sex not in GENDER:
            raise Hl7Error(f"{segment.where(8)}: administrative sex not in HL7 table 0001")
        patient["gender"] = GENDER[sex]
    return patient


def _encounter(
    segment: Segment, resource_id: str, subject: str | None, zone: ZoneInfo
) -> dict[str, Any]:
    patient_class = segment.value(2)
    code, display = PATIENT_CLASS.get(patient_class, (None, None))
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": resource_id,
        "class": (
            {"system": ACT_CODE, "code": code, "display": display}
            if code
            else {
                "system": "http://terminology.hl7.org/CodeSystem/v2-0004",
                "code": patient_class or "U",
            }
        ),
    }
    if subject:
        encounter["subject"] = {"reference": f"Patient/{subject}"}
    visit = segment.value(19)
    if visit:
        encounter["identifier"] = [{"value": visit}]
    place = " ".join(p for p in segment.first(3)[:3] if p)
    if place:
        encounter["location"] = [{"location": {"display": place}}]
    start, end = _datetime(segment, 44, zone), _datetime(segment, 45, zone)
    encounter["status"] = "finished" if end else "in-progress"
    if start or end:
        encounter["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    return encounter


def _observation(
    segment: Segment,
    subject: str | None,
    encounter: str | None,
    order: Segment | None,
    config: RecordsConfig,
    zone: ZoneInfo,
) -> dict[str, Any]:
    status = segment.value(11)
    if status not in OBSERVATION_STATUS:
        raise Hl7Error(f"{segment.where(11)}: result status not in HL7 table 0085")
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obx-{segment.position}",
        "status": OBSERVATION_STATUS[status],
        "code": _codeable(segment, 3, segment.first(3), config),
    }
    if subject:
        observation["subject"] = {"reference": f"Patient/{subject}"}
    if encounter:
        observation["encounter"] = {"reference": f"Encounter/{encounter}"}
    valued = bool(segment.repetitions(5))  # a time that dates a value must name its minute
    when = _datetime(segment, 14, zone, observed=valued)
    if when is None and order is not None:
        when = _datetime(order, 7, zone, observed=valued)
    if when:
        observation["effectiveDateTime"] = when
    observation.update(_value(segment, config, zone))
    return observation


def _value(segment: Segment, config: RecordsConfig, zone: ZoneInfo) -> dict[str, Any]:
    """OBX-5 by its OBX-2 value type. A structured numeric keeps its shape (a comparator,
    a range, a ratio), so that what mapping reads is what the message says."""
    reps = segment.repetitions(5)
    if not reps:
        return {}
    kind = segment.value(2)
    if kind not in VALUE_TYPES:  # no type, or none of the standard's: nothing says how to read
        raise Hl7Error(f"{segment.where(2)}: value type not in HL7 table 0125")
    if kind == "NM":
        if len(reps) > 1:
            raise Hl7Error(f"{segment.where(5)}: a numeric value cannot repeat")
        enc = segment.encoding
        if enc.component in reps[0] or enc.subcomponent in reps[0]:  # 104^5 is not 104
            raise Hl7Error(f"{segment.where(5)}: value is not a number (value type NM)")
        number = _number(segment, segment.components(reps[0], 5)[0], None, "NM")
        return {"valueQuantity": _quantity(segment, number, None)}
    if kind == "SN":
        if len(reps) > 1 or segment.encoding.subcomponent in reps[0]:
            raise Hl7Error(f"{segment.where(5)}: not a structured numeric (value type SN)")
        comps = [*segment.components(reps[0], 5), "", "", ""]
        comparator, first, separator, second = comps[0], comps[1].strip(), comps[2], comps[3]
        if comparator not in _COMPARATORS or not first:
            return _as_written(comps)
        low = _number(segment, first, 2, "SN")
        if not separator:
            return {"valueQuantity": _quantity(segment, low, _COMPARATORS[comparator])}
        if comparator or separator not in ("-", ":", "/"):
            return _as_written(comps)
        high = _number(segment, second, 4, "SN")
        if separator == "-":
            return {
                "valueRange": {"low": _quantity(segment, low), "high": _quantity(segment, high)}
            }
        return {"valueRatio": {"numerator": {"value": low}, "denominator": {"value": high}}}
    if kind in ("ST", "TX", "FT"):
        return {"valueString": "\n".join(segment.components(r, 5)[0] for r in reps)}
    if kind in ("CE", "CWE", "CNE", "CF"):
        return {
            "valueCodeableConcept": _codeable(segment, 5, segment.components(reps[0], 5), config)
        }
    if kind in ("DT", "DTM", "TS"):
        return {"valueDateTime": _datetime(segment, 5, zone)}
    return _unsupported()


def _number(segment: Segment, text: str, component: int | None, kind: str) -> float:
    """A decimal of OBX-5 (or one of its components): HL7's NM syntax, finite as a float
    (four hundred digits are an NM but no number a model can take)."""
    text = text.strip()
    number = float(text) if _NM.match(text) else math.inf
    if not math.isfinite(number):
        raise Hl7Error(f"{segment.where(5, component)}: value is not a number (value type {kind})")
    return number


def _as_written(comps: list[str]) -> dict[str, Any]:
    """A structured numeric FHIR has no shape for (``<>^10``, a category ``^2^+``) as the
    text it is, so that a numeric feature refuses it rather than reading the value as
    absent (and ``latest`` falling back to an older one)."""
    return {"valueString": "^".join(comps).rstrip("^")}


def _unsupported() -> dict[str, Any]:
    return {"dataAbsentReason": {"coding": [{"system": _DATA_ABSENT, "code": "unsupported"}]}}


def _quantity(segment: Segment, value: float, comparator: str | None = None) -> dict[str, Any]:
    """OBX-6 becomes a UCUM-coded unit only when its coding system says UCUM."""
    quantity: dict[str, Any] = {"value": value}
    if comparator:
        quantity["comparator"] = comparator
    units = segment.first(6) + [""] * 6
    if units[2] in UCUM_NAMES and units[0]:
        quantity.update(unit=units[1] or units[0], system=UCUM, code=units[0])
    elif units[5] in UCUM_NAMES and units[3]:
        quantity.update(unit=units[4] or units[3], system=UCUM, code=units[3])
    elif units[0] or units[1]:
        quantity["unit"] = units[0] or units[1]
    return quantity
