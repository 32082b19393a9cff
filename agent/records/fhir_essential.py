"""``essential`` FHIR validation: exactly the elements the agent reads, by FHIR R4's rules for
their datatypes, without the pydantic models (about a tenth of their cost; docs/records.md).

Checked, and nothing else (docs/records.md says what that trades):

- every resource: ``resourceType`` names a concrete R4 resource type;
- Patient: ``id`` (id), ``gender`` (required binding), ``birthDate`` (date);
- Observation: ``id``; ``status`` (required, required binding); ``code`` (required,
  CodeableConcept); ``subject`` and ``encounter`` (Reference); ``effective[x]`` (at most one;
  dateTime, Period or instant); ``issued`` (instant); ``value[x]`` (at most one; Quantity,
  CodeableConcept, string, integer or boolean); ``component[]`` (``code`` required, ``value[x]``
  as above);
- Encounter: ``id``; ``status`` (required, required binding); ``subject``; ``period``;
- Bundle: ``type`` (required, required binding); ``entry[]`` objects; ``entry.fullUrl`` (uri);
- the element *names* (keys) of every structure above: a Patient, Observation, component,
  Encounter, Bundle, entry, CodeableConcept, Coding, Quantity, Reference or Period holds only
  elements R4 defines for it, so a misspelt ``valueQuantity`` cannot hide a value from
  mapping (which would impute it). The *contents* of elements the agent does not read
  (``category``, ``meta``, ``extension``, ``contained``, ...) are not checked.

A CodeableConcept is an object whose ``coding[]`` are objects with ``system`` (uri) and
``code`` (code), and whose ``text`` is a string. A Quantity is an object whose ``value`` is a
finite JSON number and whose ``unit`` (string), ``system`` (uri) and ``code`` (code) are
well formed. A Reference's ``reference`` is a string. Dates and times match the R4 datatype
regular expressions and name a real calendar day and time (a leap second, ``:60``, is refused:
mapping could not place it in time).

Errors have the ``full`` mode's form, ``Observation at Bundle.entry[3].resource.issued: value
does not match the FHIR datatype``: where and why, never the value.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from agent.errors import FhirError
from agent.records.fhir_r4 import (
    DEEP_TYPES,
    ELEMENTS,
    REQUIRED_CODES,
    UNKNOWN_ELEMENT,
    check_resource_type,
)

# FHIR R4 primitive datatypes (https://hl7.org/fhir/R4/datatypes.html), as regular expressions.
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = (
    r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}").fullmatch
_CODE = re.compile(r"[^\s]+(\s[^\s]+)*").fullmatch
_URI = re.compile(r"\S*").fullmatch
_STRING = re.compile(r"[ \r\n\t\S]+").fullmatch
_DATE = re.compile(f"{_YEAR}(-{_MONTH}(-{_DAY})?)?").fullmatch
_DATETIME = re.compile(f"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME})?)?)?").fullmatch
_INSTANT = re.compile(f"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}").fullmatch

_INTEGER_MAX = 2**31 - 1  # FHIR integer is 32-bit signed
# R4 Observation.value[x] / Observation.component.value[x] and Observation.effective[x].
_VALUE_KEYS = frozenset(
    {
        "valueQuantity",
        "valueCodeableConcept",
        "valueString",
        "valueBoolean",
        "valueInteger",
        "valueRange",
        "valueRatio",
        "valueSampledData",
        "valueTime",
        "valueDateTime",
        "valuePeriod",
    }
)
_EFFECTIVE_KEYS = frozenset(
    {"effectiveDateTime", "effectivePeriod", "effectiveTiming", "effectiveInstant"}
)

_DATATYPE = "value does not match the FHIR datatype"
_PATIENT, _OBSERVATION, _COMPONENT, _ENCOUNTER = (
    ELEMENTS[name] for name in ("Patient", "Observation", "ObservationComponent", "Encounter")
)
_BUNDLE, _ENTRY, _CONCEPT, _CODING, _QUANTITY, _REFERENCE, _PERIOD = (
    ELEMENTS[name]
    for name in (
        "Bundle",
        "BundleEntry",
        "CodeableConcept",
        "Coding",
        "Quantity",
        "Reference",
        "Period",
    )
)


class _Invalid(Exception):
    """An element breaks its rule: ``path`` below the resource, and why (never the value)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(path, why)
        self.path = path
        self.why = why

    def under(self, prefix: str) -> _Invalid:
        """The same fault seen from the enclosing element (paths are built only on failure)."""
        self.path = prefix + self.path
        return self


def validate(resource: dict[str, Any], where: str) -> None:
    """Raise FhirError naming ``where`` and the element path if an element the agent reads
    breaks its R4 rule. Same contract as ``fhir_validate.validate``; other elements pass."""
    resource_type = check_resource_type(resource, where)
    if resource_type not in DEEP_TYPES:
        return
    try:
        _CHECKS[resource_type](resource)
    except _Invalid as bad:
        raise FhirError(f"{resource_type} at {where}{bad.path}: {bad.why}") from None


def validate_bundle_shell(bundle: dict[str, Any], where: str) -> None:
    """A Bundle's ``type`` and its entries' ``fullUrl``; the resources are validated apart."""
    try:
        _known(bundle, _BUNDLE)
        _required_code(bundle, "Bundle", "type")
        entries = bundle.get("entry", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise _Invalid(".entry", "expected an array of objects")
        for index, entry in enumerate(entries):
            try:
                _known(entry, _ENTRY)
                if "fullUrl" in entry and not _is_uri(entry["fullUrl"]):
                    raise _Invalid(".fullUrl", _kind_fault(entry["fullUrl"]))
            except _Invalid as bad:
                raise bad.under(f".entry[{index}]") from None
    except _Invalid as bad:
        raise FhirError(f"Bundle at {where}{bad.path}: {bad.why}") from None


# --- resources ----------------------------------------------------------------------------


def _patient(patient: dict[str, Any]) -> None:
    _known(patient, _PATIENT)
    _id(patient)
    if "gender" in patient:
        _code_in(patient["gender"], ".gender", REQUIRED_CODES["Patient", "gender"])
    if "birthDate" in patient:
        _when(patient["birthDate"], ".birthDate", _DATE)


def _observation(observation: dict[str, Any]) -> None:
    _known(observation, _OBSERVATION)
    _id(observation)
    _required_code(observation, "Observation", "status")
    if "code" not in observation:
        raise _Invalid(".code", "required element is missing")
    _concept(observation["code"], ".code")
    for key in ("subject", "encounter"):
        if key in observation:
            _reference(observation[key], f".{key}")
    effective = _one_of(observation, _EFFECTIVE_KEYS, "", "effective[x]")
    if effective == "effectiveDateTime":
        _when(observation[effective], ".effectiveDateTime", _DATETIME)
    elif effective == "effectivePeriod":
        _period(observation[effective], ".effectivePeriod")
    elif effective == "effectiveInstant":
        _when(observation[effective], ".effectiveInstant", _INSTANT)
    if "issued" in observation:
        _when(observation["issued"], ".issued", _INSTANT)
    _value(observation, "")
    if "component" in observation:
        for index, component in enumerate(_array(observation["component"], ".component")):
            try:
                _known(_object(component, ""), _COMPONENT)
                if "code" not in component:
                    raise _Invalid(".code", "required element is missing")
                _concept(component["code"], ".code")
                _value(component, "")
            except _Invalid as bad:
                raise bad.under(f".component[{index}]") from None


def _encounter(encounter: dict[str, Any]) -> None:
    _known(encounter, _ENCOUNTER)
    _id(encounter)
    _required_code(encounter, "Encounter", "status")
    if "subject" in encounter:
        _reference(encounter["subject"], ".subject")
    if "period" in encounter:
        _period(encounter["period"], ".period")


_CHECKS = {"Patient": _patient, "Observation": _observation, "Encounter": _encounter}


# --- datatypes ----------------------------------------------------------------------------


def _value(element: dict[str, Any], path: str) -> None:
    """value[x] of an Observation or component: at most one; the kinds mapping reads."""
    kind = _one_of(element, _VALUE_KEYS, path, "value[x]")
    if kind is None:
        return
    value = element[kind]
    here = path + "." + kind
    if kind == "valueQuantity":
        _quantity(value, here)
    elif kind == "valueCodeableConcept":
        _concept(value, here)
    elif kind == "valueString" and not _is_string(value):
        raise _Invalid(here, _kind_fault(value))
    elif kind == "valueInteger":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(here, "expected an integer")
        if not -_INTEGER_MAX - 1 <= value <= _INTEGER_MAX:
            raise _Invalid(here, "integer out of range")
    elif kind == "valueBoolean" and not isinstance(value, bool):
        raise _Invalid(here, "expected a boolean")


def _quantity(quantity: Any, path: str) -> None:
    try:
        _known(_object(quantity, ""), _QUANTITY)
        if "value" in quantity:
            number = quantity["value"]
            if not isinstance(number, int | float) or isinstance(number, bool):
                raise _Invalid(".value", "expected a number")
            try:
                float(number)  # the JSON reader refuses NaN and Infinity; huge integers end here
            except OverflowError:
                raise _Invalid(".value", "number out of range") from None
        if "unit" in quantity and not _is_string(quantity["unit"]):
            raise _Invalid(".unit", _kind_fault(quantity["unit"]))
        if "system" in quantity and not _is_uri(quantity["system"]):
            raise _Invalid(".system", _kind_fault(quantity["system"]))
        if "code" in quantity:
            _text(quantity["code"], ".code", _CODE)
    except _Invalid as bad:
        raise bad.under(path) from None


def _concept(concept: Any, path: str) -> None:
    try:
        _known(_object(concept, ""), _CONCEPT)
        if "coding" in concept:
            for index, coding in enumerate(_array(concept["coding"], ".coding")):
                try:
                    _known(_object(coding, ""), _CODING)
                    if "system" in coding and not _is_uri(coding["system"]):
                        raise _Invalid(".system", _kind_fault(coding["system"]))
                    if "code" in coding:
                        _text(coding["code"], ".code", _CODE)
                except _Invalid as bad:
                    raise bad.under(f".coding[{index}]") from None
        if "text" in concept and not _is_string(concept["text"]):
            raise _Invalid(".text", _kind_fault(concept["text"]))
    except _Invalid as bad:
        raise bad.under(path) from None


def _reference(reference: Any, path: str) -> None:
    try:
        _known(_object(reference, ""), _REFERENCE)
        if "reference" in reference and not _is_string(reference["reference"]):
            raise _Invalid(".reference", _kind_fault(reference["reference"]))
    except _Invalid as bad:
        raise bad.under(path) from None


def _period(period: Any, path: str) -> None:
    try:
        _known(_object(period, ""), _PERIOD)
        for key in ("start", "end"):
            if key in period:
                _when(period[key], "." + key, _DATETIME)
    except _Invalid as bad:
        raise bad.under(path) from None


def _id(resource: dict[str, Any]) -> None:
    if "id" in resource:
        _text(resource["id"], ".id", _ID)


def _required_code(resource: dict[str, Any], resource_type: str, element: str) -> None:
    if element not in resource:
        raise _Invalid(f".{element}", "required element is missing")
    _code_in(resource[element], f".{element}", REQUIRED_CODES[resource_type, element])


def _code_in(value: Any, path: str, allowed: frozenset[str]) -> None:
    if not isinstance(value, str):
        raise _Invalid(path, "expected a string")
    if value not in allowed:
        raise _Invalid(path, "value is not an allowed code")


def _text(value: Any, path: str, match: Any) -> None:
    """A string primitive (string, uri, code, id, ...) matching its datatype's expression."""
    if not isinstance(value, str):
        raise _Invalid(path, "expected a string")
    if match(value) is None:
        raise _Invalid(path, _DATATYPE)


def _is_string(value: Any) -> bool:
    """FHIR string: non-empty, no whitespace but space, CR, LF and tab. ``isprintable`` is a
    fast exact answer for most text (it refuses every whitespace character but space)."""
    return (
        isinstance(value, str)
        and bool(value)
        and (value.isprintable() or _STRING(value) is not None)
    )


def _is_uri(value: Any) -> bool:
    """FHIR uri: no whitespace at all (``\\S*``); fast path as in ``_is_string``."""
    return isinstance(value, str) and (
        (value.isprintable() and " " not in value) or _URI(value) is not None
    )


def _kind_fault(value: Any) -> str:
    """Why a string primitive was refused, without quoting it."""
    return _DATATYPE if isinstance(value, str) else "expected a string"


def _when(value: Any, path: str, match: Any) -> None:
    """date / dateTime / instant: the datatype's expression, then a real day and time."""
    _text(value, path, match)
    try:
        if len(value) > 10:
            datetime.fromisoformat(value)
        elif len(value) == 10:
            date.fromisoformat(value)
    except ValueError:
        raise _Invalid(path, _DATATYPE) from None


def _one_of(element: dict[str, Any], keys: frozenset[str], path: str, name: str) -> str | None:
    """The one element of a choice (``value[x]``) that is present, None if none is."""
    present = keys.intersection(element)
    if not present:
        return None
    if len(present) > 1:
        raise _Invalid(f"{path}.{name}", "more than one element of this choice")
    return next(iter(present))


def _known(element: dict[str, Any], names: frozenset[str]) -> None:
    """Every key is an element of this structure: a misspelt ``valueQuantity`` or ``code``
    would otherwise hide a value from mapping, which would then impute it."""
    if not names.issuperset(element):
        raise _Invalid("", UNKNOWN_ELEMENT)  # the key is input: its parent is named instead


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(path, "expected an object")
    return value


def _array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(path, "expected an array")
    return value
