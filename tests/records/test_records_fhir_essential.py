"""The ``essential`` FHIR validation mode: every rule refuses, errors say where and never
what, and on valid input it yields exactly what the ``full`` mode yields."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import FhirError
from agent.limits import Limits
from agent.records import RecordsConfig, parse_records
from agent.records.config import FhirValidation
from agent.records.fhir_r4 import ELEMENTS, REQUIRED_CODES, RESOURCE_TYPES
from agent.types import PatientRecord, RecordFormat

FHIR = Path(__file__).resolve().parents[2] / "fixtures" / "fhir"
ROOT = Path(__file__).resolve().parents[2]
FULL = RecordsConfig(fhir_validation=FhirValidation.full)
ESSENTIAL = RecordsConfig(fhir_validation=FhirValidation.essential)
DEMO: dict[str, Any] = json.loads((FHIR / "demo-patient-bundle.json").read_bytes())
SECRET = "SECRET-7731"


def _parse(
    doc: Any,
    config: RecordsConfig,
    fmt: RecordFormat = RecordFormat.fhir_json,
) -> list[PatientRecord]:
    return parse_records(json.dumps(doc).encode(), fmt, limits=Limits(), config=config)


def _demo() -> dict[str, Any]:
    return copy.deepcopy(DEMO)


def _bp_entry(bundle: dict[str, Any]) -> dict[str, Any]:
    """The first Observation with components (the blood pressure panel)."""
    found: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if "component" in e["resource"]
    )
    return found


def test_default_is_essential_and_unknown_mode_refused() -> None:
    assert RecordsConfig().fhir_validation is FhirValidation.essential
    with pytest.raises(ValueError, match="fhir_validation"):
        RecordsConfig(fhir_validation="none")  # type: ignore[arg-type]


# (what to break, where the error must point). Patient = entry 0, Observation = entry 1.
_OBS = r"Observation at Bundle\.entry\[1\]\.resource"
_PAT = r"Patient at Bundle\.entry\[0\]\.resource"
_REFUSED: list[tuple[str, Any, str]] = [
    (
        "resourceType unknown",
        lambda b: b["entry"][1]["resource"].update(resourceType=SECRET),
        r"Bundle\.entry\[1\]\.resource: resourceType is not a FHIR R4 resource type",
    ),
    (
        "resourceType a datatype",
        lambda b: b["entry"][1]["resource"].update(resourceType="Quantity"),
        r"resourceType is not a FHIR R4 resource type",
    ),
    (
        "resourceType not a string",
        lambda b: b["entry"][1]["resource"].update(resourceType=7731),
        r"resourceType is missing or not a string",
    ),
    (
        "Patient.id syntax",
        lambda b: b["entry"][0]["resource"].update(id="SECRET_7731"),
        rf"{_PAT}\.id: value does not match",
    ),
    (
        "Patient.id too long",
        lambda b: b["entry"][0]["resource"].update(id="SECRET7731" * 7),
        rf"{_PAT}\.id: value does not match",
    ),
    (
        "Patient.gender code",
        lambda b: b["entry"][0]["resource"].update(gender=SECRET),
        rf"{_PAT}\.gender: value is not an allowed code",
    ),
    (
        "Patient.gender type",
        lambda b: b["entry"][0]["resource"].update(gender=7731),
        rf"{_PAT}\.gender: expected a string",
    ),
    (
        "Patient.birthDate format",
        lambda b: b["entry"][0]["resource"].update(birthDate="7731-02-SECRET"),
        rf"{_PAT}\.birthDate: value does not match",
    ),
    (
        "Patient.birthDate no such day",
        lambda b: b["entry"][0]["resource"].update(birthDate="7731-02-30"),
        rf"{_PAT}\.birthDate: value does not match",
    ),
    (
        "Observation.id syntax",
        lambda b: b["entry"][1]["resource"].update(id="SECRET 7731"),
        rf"{_OBS}\.id: value does not match",
    ),
    (
        "Observation.status missing",
        lambda b: b["entry"][1]["resource"].pop("status"),
        rf"{_OBS}\.status: required element is missing",
    ),
    (
        "Observation.status code",
        lambda b: b["entry"][1]["resource"].update(status=SECRET),
        rf"{_OBS}\.status: value is not an allowed code",
    ),
    (
        "Observation.code missing",
        lambda b: b["entry"][1]["resource"].pop("code"),
        rf"{_OBS}\.code: required element is missing",
    ),
    (
        "Observation.code type",
        lambda b: b["entry"][1]["resource"].update(code=[SECRET]),
        rf"{_OBS}\.code: expected an object",
    ),
    (
        "coding not an array",
        lambda b: b["entry"][1]["resource"]["code"].update(coding={"code": SECRET}),
        rf"{_OBS}\.code\.coding: expected an array",
    ),
    (
        "coding not an object",
        lambda b: b["entry"][1]["resource"]["code"].update(coding=[SECRET]),
        rf"{_OBS}\.code\.coding\[0\]: expected an object",
    ),
    (
        "coding.system uri",
        lambda b: b["entry"][1]["resource"]["code"]["coding"][0].update(
            system="http://x/ SECRET-7731"
        ),
        rf"{_OBS}\.code\.coding\[0\]\.system: value does not",
    ),
    (
        "coding.system type",
        lambda b: b["entry"][1]["resource"]["code"]["coding"][0].update(system=7731),
        rf"{_OBS}\.code\.coding\[0\]\.system: expected a string",
    ),
    (
        "coding.code syntax",
        lambda b: b["entry"][1]["resource"]["code"]["coding"][0].update(code=" SECRET-7731"),
        rf"{_OBS}\.code\.coding\[0\]\.code: value does not match",
    ),
    (
        "coding.code type",
        lambda b: b["entry"][1]["resource"]["code"]["coding"][0].update(code=7731),
        rf"{_OBS}\.code\.coding\[0\]\.code: expected a string",
    ),
    (
        "code.text type",
        lambda b: b["entry"][1]["resource"]["code"].update(text=7731),
        rf"{_OBS}\.code\.text: expected a string",
    ),
    (
        "subject type",
        lambda b: b["entry"][1]["resource"].update(subject=SECRET),
        rf"{_OBS}\.subject: expected an object",
    ),
    (
        "subject.reference type",
        lambda b: b["entry"][1]["resource"].update(subject={"reference": 7731}),
        rf"{_OBS}\.subject\.reference: expected a string",
    ),
    (
        "subject.reference empty",
        lambda b: b["entry"][1]["resource"].update(subject={"reference": ""}),
        rf"{_OBS}\.subject\.reference: value does not match",
    ),
    (
        "encounter.reference type",
        lambda b: b["entry"][1]["resource"].update(encounter={"reference": [SECRET]}),
        rf"{_OBS}\.encounter\.reference: expected a str",
    ),
    (
        "effectiveDateTime format",
        lambda b: b["entry"][1]["resource"].update(effectiveDateTime="7731-03-15T10:00:00"),
        rf"{_OBS}\.effectiveDateTime: value does not",
    ),
    (
        "effectiveDateTime null",
        lambda b: b["entry"][1]["resource"].update(effectiveDateTime=None),
        rf"{_OBS}\.effectiveDateTime: expected a string",
    ),
    (
        "effectiveDateTime leap second",
        lambda b: b["entry"][1]["resource"].update(effectiveDateTime="7731-03-15T10:00:60Z"),
        rf"{_OBS}\.effectiveDateTime: value does",
    ),
    (
        "effectiveDateTime offset",
        lambda b: b["entry"][1]["resource"].update(effectiveDateTime="7731-03-15T10:00:00+15:00"),
        rf"{_OBS}\.effectiveDateTime: value",
    ),
    (
        "two effective[x]",
        lambda b: b["entry"][1]["resource"].update(effectiveInstant="7731-03-15"),
        rf"{_OBS}\.effective\[x\]: more than one",
    ),
    (
        "effectivePeriod.start",
        lambda b: (
            b["entry"][1]["resource"].pop("effectiveDateTime"),
            b["entry"][1]["resource"].update(effectivePeriod={"start": "7731-13"}),
        ),
        rf"{_OBS}\.effectivePeriod\.start: value does not match",
    ),
    (
        "effectivePeriod type",
        lambda b: (
            b["entry"][1]["resource"].pop("effectiveDateTime"),
            b["entry"][1]["resource"].update(effectivePeriod=SECRET),
        ),
        rf"{_OBS}\.effectivePeriod: expected an object",
    ),
    (
        "effectiveInstant without time",
        lambda b: (
            b["entry"][1]["resource"].pop("effectiveDateTime"),
            b["entry"][1]["resource"].update(effectiveInstant="7731-03-15"),
        ),
        rf"{_OBS}\.effectiveInstant: value does not match",
    ),
    (
        "issued without time",
        lambda b: b["entry"][1]["resource"].update(issued="7731-03-15"),
        rf"{_OBS}\.issued: value does not match",
    ),
    (
        "two value[x]",
        lambda b: b["entry"][1]["resource"].update(valueString=SECRET),
        rf"{_OBS}\.value\[x\]: more than one element of this choice",
    ),
    (
        "valueQuantity type",
        lambda b: b["entry"][1]["resource"].update(valueQuantity=[7731]),
        rf"{_OBS}\.valueQuantity: expected an object",
    ),
    (
        "valueQuantity.value string",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(value=SECRET),
        rf"{_OBS}\.valueQuantity\.value: expected a number",
    ),
    (
        "valueQuantity.value numeric string",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(value="7731"),
        rf"{_OBS}\.valueQuantity\.value: expected a num",
    ),
    (
        "valueQuantity.value boolean",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(value=True),
        rf"{_OBS}\.valueQuantity\.value: expected a number",
    ),
    (
        "valueQuantity.value null",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(value=None),
        rf"{_OBS}\.valueQuantity\.value: expected a number",
    ),
    (
        "valueQuantity.value beyond float",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(value=7731 * 10**400),
        rf"{_OBS}\.valueQuantity\.value: number out of range",
    ),
    (
        "valueQuantity.unit type",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(unit=7731),
        rf"{_OBS}\.valueQuantity\.unit: expected a string",
    ),
    (
        "valueQuantity.unit empty",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(unit=""),
        rf"{_OBS}\.valueQuantity\.unit: value does not match",
    ),
    (
        "valueQuantity.system uri",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(system="SECRET 7731"),
        rf"{_OBS}\.valueQuantity\.system: value does not match",
    ),
    (
        "valueQuantity.code syntax",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(code="SECRET  7731"),
        rf"{_OBS}\.valueQuantity\.code: value does not match",
    ),
    (
        "valueCodeableConcept.coding",
        lambda b: (
            b["entry"][1]["resource"].pop("valueQuantity"),
            b["entry"][1]["resource"].update(valueCodeableConcept={"coding": [{"code": 7731}]}),
        ),
        rf"{_OBS}\.valueCodeableConcept\.coding\[0\]\.code: expected a string",
    ),
    (
        "valueString empty",
        lambda b: (
            b["entry"][1]["resource"].pop("valueQuantity"),
            b["entry"][1]["resource"].update(valueString=""),
        ),
        rf"{_OBS}\.valueString: value does not match",
    ),
    (
        "valueString control character",
        lambda b: (
            b["entry"][1]["resource"].pop("valueQuantity"),
            b["entry"][1]["resource"].update(valueString="SECRET\x0b7731"),
        ),
        rf"{_OBS}\.valueString: value does not match",
    ),
    (
        "valueInteger decimal",
        lambda b: (
            b["entry"][1]["resource"].pop("valueQuantity"),
            b["entry"][1]["resource"].update(valueInteger=77.31),
        ),
        rf"{_OBS}\.valueInteger: expected an integer",
    ),
    (
        "valueInteger beyond 32 bits",
        lambda b: (
            b["entry"][1]["resource"].pop("valueQuantity"),
            b["entry"][1]["resource"].update(valueInteger=7731 * 2**31),
        ),
        rf"{_OBS}\.valueInteger: integer out of range",
    ),
    (
        "valueBoolean type",
        lambda b: (
            b["entry"][1]["resource"].pop("valueQuantity"),
            b["entry"][1]["resource"].update(valueBoolean="SECRET"),
        ),
        rf"{_OBS}\.valueBoolean: expected a boolean",
    ),
    (
        "component not an array",
        lambda b: _bp_entry(b).update(component={"code": SECRET}),
        r"Observation at .*\.component: expected an array",
    ),
    (
        "component not an object",
        lambda b: _bp_entry(b).update(component=[SECRET]),
        r"Observation at .*\.component\[0\]: expected an object",
    ),
    (
        "component.code missing",
        lambda b: _bp_entry(b)["component"][1].pop("code"),
        r"Observation at .*\.component\[1\]\.code: required element is missing",
    ),
    (
        "component.code.coding.system",
        lambda b: _bp_entry(b)["component"][1]["code"]["coding"][0].update(system=7731),
        r"\.component\[1\]\.code\.coding\[0\]\.system: expected a str",
    ),
    (
        "component value",
        lambda b: _bp_entry(b)["component"][1]["valueQuantity"].update(value=SECRET),
        r"\.component\[1\]\.valueQuantity\.value: expected a number",
    ),
    (
        "component two value[x]",
        lambda b: _bp_entry(b)["component"][0].update(valueString=SECRET),
        r"\.component\[0\]\.value\[x\]: more than one element",
    ),
    (
        "unknown Observation element",
        lambda b: b["entry"][1]["resource"].update(effectiveDatetime="7731"),
        rf"{_OBS}: holds an element not defined",
    ),
    (
        "unknown Patient element",
        lambda b: b["entry"][0]["resource"].update(sex="SECRET"),
        rf"{_PAT}: holds an element not defined",
    ),
    (
        "unknown Quantity element",
        lambda b: b["entry"][1]["resource"]["valueQuantity"].update(vaule=7731),
        rf"{_OBS}\.valueQuantity: holds an element not defined",
    ),
    (
        "unknown Coding element",
        lambda b: b["entry"][1]["resource"]["code"]["coding"][0].update(cdoe="SECRET"),
        rf"{_OBS}\.code\.coding\[0\]: holds an element not defined",
    ),
    (
        "unknown CodeableConcept element",
        lambda b: b["entry"][1]["resource"]["code"].update(codings=[SECRET]),
        rf"{_OBS}\.code: holds an element not defined",
    ),
    (
        "unknown Reference element",
        lambda b: b["entry"][1]["resource"]["subject"].update(ref=SECRET),
        rf"{_OBS}\.subject: holds an element not defined",
    ),
    (
        "unknown component element",
        lambda b: _bp_entry(b)["component"][0].update(valueQty=SECRET),
        r"\.component\[0\]: holds an element not defined",
    ),
    (
        "unknown Period element",
        lambda b: (
            b["entry"][1]["resource"].pop("effectiveDateTime"),
            b["entry"][1]["resource"].update(effectivePeriod={"begin": "7731"}),
        ),
        rf"{_OBS}\.effectivePeriod: holds an element not defined",
    ),
    (
        "unknown Bundle element",
        lambda b: b.update(entries=[SECRET]),
        r"Bundle at Bundle: holds an element not defined",
    ),
    (
        "unknown entry element",
        lambda b: b["entry"][2].update(resorce=SECRET),
        r"Bundle at Bundle\.entry\[2\]: holds an element not defined",
    ),
    (
        "Bundle.type missing",
        lambda b: b.pop("type"),
        r"Bundle at Bundle\.type: required element is missing",
    ),
    (
        "Bundle.type code",
        lambda b: b.update(type=SECRET),
        r"Bundle at Bundle\.type: value is not an allowed code",
    ),
    (
        "Bundle.entry type",
        lambda b: b.update(entry={"resource": SECRET}),
        r"Bundle at Bundle\.entry: expected an array of objects",
    ),
    (
        "entry.fullUrl uri",
        lambda b: b["entry"][2].update(fullUrl="urn:uuid:SECRET 7731"),
        r"Bundle at Bundle\.entry\[2\]\.fullUrl: value does not match",
    ),
    (
        "entry.fullUrl type",
        lambda b: b["entry"][2].update(fullUrl=7731),
        r"Bundle at Bundle\.entry\[2\]\.fullUrl: expected a string",
    ),
    (
        "entry.resource type",
        lambda b: b["entry"][2].update(resource=[SECRET]),
        r"Bundle\.entry\[2\]\.resource: expected a JSON object",
    ),
]
_ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "enc-1",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2026-03-14T08:00:00Z", "end": "2026-03-15T08:00:00Z"},
}
_ENC = r"Encounter at resource"
_REFUSED_ENCOUNTER: list[tuple[str, Any, str]] = [
    (
        "Encounter.status missing",
        lambda r: r.pop("status"),
        rf"{_ENC}\.status: required element is missing",
    ),
    (
        "Encounter.status code",
        lambda r: r.update(status=SECRET),
        rf"{_ENC}\.status: value is not an allowed code",
    ),
    ("Encounter.id syntax", lambda r: r.update(id="SECRET/7731"), rf"{_ENC}\.id: value does"),
    (
        "Encounter.subject.reference",
        lambda r: r.update(subject={"reference": 7731}),
        rf"{_ENC}\.subject\.reference: expected a string",
    ),
    (
        "Encounter.period.end",
        lambda r: r["period"].update(end="7731-03-15T25:00:00Z"),
        rf"{_ENC}\.period\.end: value does not match",
    ),
    (
        "Encounter.period type",
        lambda r: r.update(period=[SECRET]),
        rf"{_ENC}\.period: expected an object",
    ),
]


def _assert_no_value(error: FhirError) -> None:
    message = str(error)
    assert "SECRET" not in message and "7731" not in message, message
    assert error.__cause__ is None


@pytest.mark.parametrize(("mutate", "where"), [pytest.param(m, w, id=n) for n, m, w in _REFUSED])
def test_essential_refuses_and_names_the_place_not_the_value(mutate: Any, where: str) -> None:
    bundle = _demo()
    mutate(bundle)
    with pytest.raises(FhirError, match=where) as caught:
        _parse(bundle, ESSENTIAL)
    _assert_no_value(caught.value)


@pytest.mark.parametrize("mutate", [pytest.param(m, id=n) for n, m, _ in _REFUSED])
def test_full_refuses_everything_essential_refuses(mutate: Any) -> None:
    """``full`` runs the essential checks after the models: it is never the weaker mode (the
    models alone accept e.g. a value of 10**400, which then broke mapping's float())."""
    bundle = _demo()
    mutate(bundle)
    with pytest.raises(FhirError) as caught:
        _parse(bundle, FULL)
    _assert_no_value(caught.value)


@pytest.mark.parametrize(
    ("mutate", "where"), [pytest.param(m, w, id=n) for n, m, w in _REFUSED_ENCOUNTER]
)
def test_essential_refuses_bad_encounters(mutate: Any, where: str) -> None:
    encounter = copy.deepcopy(_ENCOUNTER)
    mutate(encounter)
    with pytest.raises(FhirError, match=where) as caught:
        _parse(encounter, ESSENTIAL)
    _assert_no_value(caught.value)


@pytest.mark.parametrize("config", [FULL, ESSENTIAL], ids=["full", "essential"])
@pytest.mark.parametrize("key", ["SECRET 7731-02-30", "DoeJaneMRN0042"])
def test_an_unknown_key_is_never_echoed_its_parent_is_named(
    config: RecordsConfig, key: str
) -> None:
    bundle = _demo()
    bundle["entry"][1]["resource"]["valueQuantity"][key] = 1
    with pytest.raises(
        FhirError, match=r"resource\.valueQuantity: holds an element not defined"
    ) as caught:
        _parse(bundle, config)
    _assert_no_value(caught.value)
    assert key not in str(caught.value)


def test_essential_ndjson_error_names_the_line() -> None:
    lines = (FHIR / "multi-patient.ndjson").read_bytes().splitlines()
    broken = json.loads(lines[2])
    broken["valueQuantity"]["value"] = SECRET
    lines[2] = json.dumps(broken).encode()
    with pytest.raises(FhirError, match=r"line 3: resource\.valueQuantity\.value") as caught:
        parse_records(
            b"\n".join(lines), RecordFormat.fhir_ndjson, limits=Limits(), config=ESSENTIAL
        )
    _assert_no_value(caught.value)


def test_essential_leaves_unread_elements_unchecked() -> None:
    """The trade, pinned: what ``full`` refuses and ``essential`` lets through."""
    bundle = _demo()
    observation = bundle["entry"][1]["resource"]
    observation["category"] = [{"coding": [{"code": 7731}]}]  # never read by the agent
    observation["referenceRange"] = [{"low": {"SECRET_7731": True}}]
    bundle["entry"][0]["resource"]["name"] = "not a HumanName array"
    with pytest.raises(FhirError):
        _parse(bundle, FULL)
    [record] = _parse(bundle, ESSENTIAL)
    assert len(record.observations) == 30


@pytest.mark.parametrize(
    "name", sorted(p.name for p in FHIR.iterdir() if p.suffix in (".json", ".ndjson"))
)
def test_both_modes_agree_on_the_fixtures(name: str) -> None:
    body = (FHIR / name).read_bytes()
    fmt = RecordFormat.fhir_ndjson if name.endswith(".ndjson") else RecordFormat.fhir_json
    outcomes: list[list[PatientRecord] | str] = []
    for config in (FULL, ESSENTIAL):
        try:
            outcomes.append(parse_records(body, fmt, limits=Limits(), config=config))
        except FhirError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0] == "refused") == name.startswith("invalid")


# --- valid R4 input, generated: both modes give the same records --------------------------

_IDS = st.from_regex(r"[A-Za-z0-9\-\.]{1,64}", fullmatch=True)
_CODES = st.from_regex(r"[A-Za-z0-9\-\.\[\]/%]{1,10}( [A-Za-z0-9]{1,4})?", fullmatch=True)
_SYSTEMS = st.sampled_from(
    ["http://loinc.org", "http://unitsofmeasure.org", "http://snomed.info/sct", "urn:hl7v2-local:L"]
)
_TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_categories=("Cc", "Zs", "Cs"))
    | st.just(" "),
    min_size=1,
    max_size=20,
)
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
)
_MOMENTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=_ZONES
)
_INSTANTS = _MOMENTS.map(lambda d: d.isoformat().replace("+00:00", "Z"))
_DATETIMES = st.one_of(
    _INSTANTS,
    _MOMENTS.map(lambda d: d.strftime("%Y-%m-%d")),
    _MOMENTS.map(lambda d: d.strftime("%Y-%m")),
    _MOMENTS.map(lambda d: d.strftime("%Y")),
)


def _maybe(element: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just({}), strategy.map(lambda v: {element: v}))


def _merged(*parts: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()})


_CODING = _merged(_maybe("system", _SYSTEMS), _maybe("code", _CODES), _maybe("display", _TEXT))
_CONCEPT = _merged(
    _maybe("coding", st.lists(_CODING, min_size=1, max_size=2)), _maybe("text", _TEXT)
)
_NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False, width=64)
)
_QUANTITY = _merged(
    _maybe("value", _NUMBERS),
    _maybe("unit", _TEXT),
    _maybe("system", _SYSTEMS),
    _maybe("code", _CODES),
)
_VALUE = st.one_of(
    st.just({}),
    _QUANTITY.map(lambda q: {"valueQuantity": q}),
    _CONCEPT.map(lambda c: {"valueCodeableConcept": c}),
    _TEXT.map(lambda s: {"valueString": s}),
    st.integers(-(2**31), 2**31 - 1).map(lambda i: {"valueInteger": i}),
    st.booleans().map(lambda b: {"valueBoolean": b}),
)
_EFFECTIVE = st.one_of(
    st.just({}),
    _DATETIMES.map(lambda d: {"effectiveDateTime": d}),
    _INSTANTS.map(lambda d: {"effectiveInstant": d}),
    _merged(_maybe("start", _DATETIMES), _maybe("end", _DATETIMES)).map(
        lambda p: {"effectivePeriod": p}
    ),
)
_COMPONENT = st.tuples(_CONCEPT, _VALUE).map(lambda cv: {"code": cv[0], **cv[1]})


def _observation(subject: str) -> st.SearchStrategy[dict[str, Any]]:
    return _merged(
        st.just({"resourceType": "Observation"}),
        _maybe("id", _IDS),
        st.sampled_from(sorted(REQUIRED_CODES["Observation", "status"])).map(
            lambda s: {"status": s}
        ),
        _CONCEPT.map(lambda c: {"code": c}),
        st.just({"subject": {"reference": subject}}),
        _EFFECTIVE,
        _maybe("issued", _INSTANTS),
        _VALUE,
        _maybe("component", st.lists(_COMPONENT, min_size=1, max_size=3)),
        # valid elements the agent does not read
        _maybe("category", st.lists(_CONCEPT, min_size=1, max_size=2)),
        _maybe("note", st.lists(_TEXT.map(lambda t: {"text": t}), min_size=1, max_size=1)),
        _maybe("meta", _INSTANTS.map(lambda i: {"lastUpdated": i})),
    )


_PATIENT = _merged(
    st.just({"resourceType": "Patient", "id": "p1"}),
    _maybe("gender", st.sampled_from(sorted(REQUIRED_CODES["Patient", "gender"]))),
    _maybe("birthDate", _DATETIMES.map(lambda d: d[:10])),
    _maybe("name", st.lists(_TEXT.map(lambda t: {"family": t}), min_size=1, max_size=2)),
    _maybe("active", st.booleans()),
)
_ENCOUNTERS = _merged(
    st.just(
        {
            "resourceType": "Encounter",
            "class": {"code": "IMP"},
            "subject": {"reference": "Patient/p1"},
        }
    ),
    _maybe("id", _IDS),
    st.sampled_from(sorted(REQUIRED_CODES["Encounter", "status"])).map(lambda s: {"status": s}),
    _maybe("period", _merged(_maybe("start", _DATETIMES), _maybe("end", _DATETIMES))),
)
_BUNDLES = st.tuples(
    st.sampled_from(sorted(REQUIRED_CODES["Bundle", "type"])),
    _PATIENT,
    st.lists(_observation("urn:uuid:p1") | _observation("Patient/p1"), max_size=4),
    st.lists(_ENCOUNTERS, max_size=2),
).map(
    lambda t: {
        "resourceType": "Bundle",
        "type": t[0],
        "entry": [{"fullUrl": "urn:uuid:p1", "resource": t[1]}]
        + [{"resource": r} for r in t[2] + t[3]],
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_BUNDLES)
def test_both_modes_give_the_same_records_on_valid_input(bundle: dict[str, Any]) -> None:
    body = json.dumps(bundle).encode()
    full = parse_records(body, RecordFormat.fhir_json, limits=Limits(), config=FULL)
    essential = parse_records(body, RecordFormat.fhir_json, limits=Limits(), config=ESSENTIAL)
    assert essential == full
    assert essential[0].patient == bundle["entry"][0]["resource"]


def test_resource_type_names_are_those_of_the_r4b_models() -> None:
    from fhir.resources.R4B import fhirtypes
    from fhir.resources.R4B.resource import Resource

    concrete = set()
    for name in dir(fhirtypes):
        if name.endswith("Type") and name[:1].isupper():
            try:
                model = getattr(fhirtypes, name).get_model_klass()
            except (AttributeError, TypeError):
                continue
            if isinstance(model, type) and issubclass(model, Resource):
                concrete.add(model.__name__)
    assert concrete - {"Resource", "DomainResource"} == RESOURCE_TYPES


def test_element_names_are_those_of_the_r4b_models() -> None:
    from fhir.resources.R4B import get_fhir_model_class

    for name, names in ELEMENTS.items():
        model = get_fhir_model_class(name)
        expected = {field.alias or key for key, field in model.model_fields.items()}
        if name in RESOURCE_TYPES:
            expected.add("resourceType")
        assert names == expected, name


def test_essential_never_imports_fhir_resources() -> None:
    code = (
        "import sys, pathlib\n"
        "from agent.limits import Limits\n"
        "from agent.records import RecordsConfig, parse_records\n"
        "body = pathlib.Path('fixtures/fhir/demo-patient-bundle.json').read_bytes()\n"
        "parse_records(body, 'fhir_json', limits=Limits(),"
        " config=RecordsConfig(fhir_validation='essential'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('fhir.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"
