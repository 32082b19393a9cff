"""``essential`` FHIR validation (the default): exactly the elements the agent reads, by FHIR
R4's rules for their datatypes, without the pydantic models (about a tenth of their cost;
docs/records.md).

Checked, and nothing else (docs/records.md says what that trades):

- every resource: ``resourceType`` names a concrete R4 resource type;
- Patient: ``id`` (id), ``gender`` (required binding), ``birthDate`` (date);
- Observation: ``id``; ``status`` (required, required binding); ``code`` (required,
  CodeableConcept); ``subject`` and ``encounter`` (Reference); ``effective[x]`` (at most one;
  dateTime, Period or instant); ``issued`` (instant); ``value[x]`` (at most one; Quantity,
  CodeableConcept, string, integer or boolean); ``component[]`` (``code`` required, ``value[x]``
  as above). When the served mapping's codes are known (``ElementReach.codes``), an
  Observation coded with none of them (nor any of its components) is read only for its
  status, code, subject and components' codes, so only those are checked;
- Encounter: ``id``; ``status`` (required, required binding); ``subject``; ``period``;
- Bundle: ``type`` (required, required binding); ``entry[]`` objects; ``entry.fullUrl`` (uri);
- the element *names* (keys) of every structure above: a Patient, Observation, component,
  Encounter, Bundle, entry, CodeableConcept, Coding, Quantity, Reference or Period holds only
  elements R4 defines for it, so a misspelt ``valueQuantity`` cannot hide a value from
  mapping (which would impute it). The *contents* of elements the agent does not read
  (``category``, ``meta``, ``extension``, ``contained``, ...) are not checked;
- and every element the served mapping's FHIRPath features can reach (``reach``, derived
  when the mapping loads), with its whole subtree, by the rules of its R4 datatypes
  (``fhir_datatypes``): so nothing a feature reads escapes the checks.

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

from typing import Any

from agent.errors import FhirError
from agent.records.fhir_datatypes import (
    DATE,
    DATETIME,
    ID,
    INSTANT,
    INTEGER_MAX,
    Invalid,
    check_elements,
    decimal,
    is_code,
    is_string,
    is_uri,
    kind_fault,
    reached_keys,
    text,
    when,
)
from agent.records.fhir_r4 import (
    DEEP_TYPES,
    ELEMENTS,
    REQUIRED_CODES,
    UNKNOWN_ELEMENT,
    check_resource_type,
)
from agent.types import ElementReach

# R4 Observation.value[x] / Observation.component.value[x] and Observation.effective[x].
VALUE_KEYS = frozenset(
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
_OBSERVATION_STATUS = REQUIRED_CODES["Observation", "status"]
EFFECTIVE_KEYS = frozenset(
    {"effectiveDateTime", "effectivePeriod", "effectiveTiming", "effectiveInstant"}
)

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


def validate(resource: dict[str, Any], where: str, reach: ElementReach | None = None) -> None:
    """Raise FhirError naming ``where`` and the element path if an element the agent reads
    breaks its R4 rule: what its own code reads, and every element ``reach`` (the served
    mapping's FHIRPath) can reach, each with its whole subtree by the rules of its R4 type.
    An Observation whose codes no feature reads (``reach.codes``) is read, and checked, only
    for its status, code, subject and components' codes. Same contract as
    ``fhir_validate.validate``; other elements pass."""
    resource_type = check_resource_type(resource, where)
    if resource_type not in DEEP_TYPES:
        return
    keys = reached(resource_type, reach)
    try:
        if resource_type == "Observation":
            _observation(resource, reach.codes if reach is not None else None)
        else:
            _CHECKS[resource_type](resource)
        if keys:
            check_elements(resource, resource_type, keys)
    except Invalid as bad:
        raise FhirError(f"{resource_type} at {where}{bad.path}: {bad.why}") from None
    if "contained" in keys:
        _contained(resource, where)


def reached(resource_type: str, reach: ElementReach | None) -> frozenset[str]:
    """The top-level elements of ``resource_type`` the mapping's FHIRPath (``reach``) can
    read, each checked with its whole subtree; empty when it reads none."""
    names = reach.of(resource_type) if reach is not None else frozenset()
    return reached_keys(resource_type, names) if names is None or names else frozenset()


def _contained(resource: dict[str, Any], where: str) -> None:
    """Contained resources FHIRPath can reach may be of any type: the R4B models validate
    them (imported only here, so only for a mapping that reaches them and input that has
    them), then these checks."""
    contained = resource.get("contained")
    if not contained:
        return
    if not isinstance(contained, list):
        raise FhirError(f"{resource['resourceType']} at {where}.contained: expected an array")
    from agent.records import fhir_validate  # the models, only when needed

    for index, inner in enumerate(contained):
        if not isinstance(inner, dict):
            raise FhirError(f"{where}.contained[{index}]: expected a JSON object")
        fhir_validate.validate_whole(inner, f"{where}.contained[{index}]")


def validate_bundle_shell(bundle: dict[str, Any], where: str) -> None:
    """A Bundle's ``type`` and its entries' ``fullUrl``; the resources are validated apart."""
    try:
        _known(bundle, _BUNDLE)
        _required_code(bundle, "Bundle", "type")
        entries = bundle.get("entry", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise Invalid(".entry", "expected an array of objects")
        for index, entry in enumerate(entries):
            try:
                _known(entry, _ENTRY)
                if "fullUrl" in entry and not is_uri(entry["fullUrl"]):
                    raise Invalid(".fullUrl", kind_fault(entry["fullUrl"]))
            except Invalid as bad:
                raise bad.under(f".entry[{index}]") from None
    except Invalid as bad:
        raise FhirError(f"Bundle at {where}{bad.path}: {bad.why}") from None


# --- resources ----------------------------------------------------------------------------


def _patient(patient: dict[str, Any]) -> None:
    _known(patient, _PATIENT)
    _id(patient)
    if "gender" in patient:
        _code_in(patient["gender"], ".gender", REQUIRED_CODES["Patient", "gender"])
    if "birthDate" in patient:
        when(patient["birthDate"], ".birthDate", DATE)


def _observation(
    observation: dict[str, Any], codes: frozenset[tuple[str, str]] | None = None
) -> None:
    """An Observation; when ``codes`` are given (the mapping's) and it is coded with none of
    them, nor any of its components, no feature reads its values and only what every
    Observation is read for is checked (``_coded``)."""
    if not _coded(observation, codes):
        return
    if "id" in observation:
        text(observation["id"], ".id", ID)
    if "encounter" in observation:
        _reference(observation["encounter"], ".encounter")
    effective = _one_of(observation, EFFECTIVE_KEYS, "", "effective[x]")
    if effective == "effectiveDateTime":
        when(observation[effective], ".effectiveDateTime", DATETIME)
    elif effective == "effectivePeriod":
        _period(observation[effective], ".effectivePeriod")
    elif effective == "effectiveInstant":
        when(observation[effective], ".effectiveInstant", INSTANT)
    if "issued" in observation:
        when(observation["issued"], ".issued", INSTANT)
    _value(observation, "")
    for index, component in enumerate(observation.get("component", ())):
        try:
            _value(component, "")
        except Invalid as bad:
            raise bad.under(f".component[{index}]") from None


def _coded(observation: dict[str, Any], codes: frozenset[tuple[str, str]] | None) -> bool:
    """What every Observation is read for (its element names, status, code, subject and
    its components' codes: grouping and the code match); then whether a feature reads it:
    its code or a component's is one of ``codes`` (as ``agent.mapping.facts.WantedCodes``
    matches them), or ``codes`` is None."""
    _known(observation, _OBSERVATION)
    status = observation.get("status")
    if not isinstance(status, str) or status not in _OBSERVATION_STATUS:
        _required_code(observation, "Observation", "status")  # raises, saying why
    if "code" not in observation:
        raise Invalid(".code", "required element is missing")
    _concept(observation["code"], ".code")
    read = codes is None or _coded_with(observation["code"], codes)
    if "subject" in observation:
        _reference(observation["subject"], ".subject")
    if "component" in observation:
        for index, component in enumerate(_array(observation["component"], ".component")):
            try:
                _known(component, _COMPONENT)
                if "code" not in component:
                    raise Invalid(".code", "required element is missing")
                _concept(component["code"], ".code")
            except Invalid as bad:
                raise bad.under(f".component[{index}]") from None
            read = read or _coded_with(component["code"], codes)
    return read


def _coded_with(concept: dict[str, Any], codes: frozenset[tuple[str, str]] | None) -> bool:
    """Whether a checked CodeableConcept carries one of ``codes`` (None: any)."""
    if codes is None:
        return True
    for coding in concept.get("coding", ()):
        if (coding.get("system", ""), coding.get("code")) in codes:
            return True
    return False


def _encounter(encounter: dict[str, Any]) -> None:
    _known(encounter, _ENCOUNTER)
    _id(encounter)
    _required_code(encounter, "Encounter", "status")
    if "subject" in encounter:
        _reference(encounter["subject"], ".subject")
    if "period" in encounter:
        _period(encounter["period"], ".period")


_CHECKS = {"Patient": _patient, "Encounter": _encounter}


# --- datatypes ----------------------------------------------------------------------------


def _value(element: dict[str, Any], path: str) -> None:
    """value[x] of an Observation or component: at most one; the kinds mapping reads."""
    kind = _one_of(element, VALUE_KEYS, path, "value[x]")
    if kind is None:
        return
    value = element[kind]
    here = path + "." + kind
    if kind == "valueQuantity":
        _quantity(value, here)
    elif kind == "valueCodeableConcept":
        _concept(value, here)
    elif kind == "valueString" and not is_string(value):
        raise Invalid(here, kind_fault(value))
    elif kind == "valueInteger":
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(here, "expected an integer")
        if not -INTEGER_MAX - 1 <= value <= INTEGER_MAX:
            raise Invalid(here, "integer out of range")
    elif kind == "valueBoolean" and not isinstance(value, bool):
        raise Invalid(here, "expected a boolean")


def _quantity(quantity: Any, path: str) -> None:
    try:
        _known(quantity, _QUANTITY)
        if "value" in quantity:
            number = quantity["value"]
            if type(number) is not float:  # the usual case, finite as the JSON reader made it
                decimal(number, ".value")
        if "unit" in quantity and not is_string(quantity["unit"]):
            raise Invalid(".unit", kind_fault(quantity["unit"]))
        if "system" in quantity and not is_uri(quantity["system"]):
            raise Invalid(".system", kind_fault(quantity["system"]))
        if "code" in quantity and not is_code(quantity["code"]):
            raise Invalid(".code", kind_fault(quantity["code"]))
    except Invalid as bad:
        raise bad.under(path) from None


def _concept(concept: Any, path: str) -> None:
    try:
        _known(concept, _CONCEPT)
        if "coding" in concept:
            codings = concept["coding"]
            if not isinstance(codings, list):
                raise Invalid(".coding", "expected an array")
            for index, coding in enumerate(codings):
                try:
                    _known(coding, _CODING)
                    if "system" in coding and not is_uri(coding["system"]):
                        raise Invalid(".system", kind_fault(coding["system"]))
                    if "code" in coding and not is_code(coding["code"]):
                        raise Invalid(".code", kind_fault(coding["code"]))
                except Invalid as bad:
                    raise bad.under(f".coding[{index}]") from None
        if "text" in concept and not is_string(concept["text"]):
            raise Invalid(".text", kind_fault(concept["text"]))
    except Invalid as bad:
        raise bad.under(path) from None


def _reference(reference: Any, path: str) -> None:
    try:
        _known(reference, _REFERENCE)
        if "reference" in reference and not is_string(reference["reference"]):
            raise Invalid(".reference", kind_fault(reference["reference"]))
    except Invalid as bad:
        raise bad.under(path) from None


def _period(period: Any, path: str) -> None:
    try:
        _known(period, _PERIOD)
        for key in ("start", "end"):
            if key in period:
                when(period[key], "." + key, DATETIME)
    except Invalid as bad:
        raise bad.under(path) from None


def _id(resource: dict[str, Any]) -> None:
    if "id" in resource:
        text(resource["id"], ".id", ID)


def _required_code(resource: dict[str, Any], resource_type: str, element: str) -> None:
    if element not in resource:
        raise Invalid(f".{element}", "required element is missing")
    _code_in(resource[element], f".{element}", REQUIRED_CODES[resource_type, element])


def _code_in(value: Any, path: str, allowed: frozenset[str]) -> None:
    if not isinstance(value, str):
        raise Invalid(path, "expected a string")
    if value not in allowed:
        raise Invalid(path, "value is not an allowed code")


def _one_of(element: dict[str, Any], keys: frozenset[str], path: str, name: str) -> str | None:
    """The one element of a choice (``value[x]``) that is present, None if none is."""
    present = keys.intersection(element)
    if not present:
        return None
    if len(present) > 1:
        raise Invalid(f"{path}.{name}", "more than one element of this choice")
    return next(iter(present))


def _known(element: Any, names: frozenset[str]) -> None:
    """An object whose every key is an element of this structure: a misspelt
    ``valueQuantity`` or ``code`` would otherwise hide a value from mapping, which would
    then impute it."""
    if not isinstance(element, dict):
        raise Invalid("", "expected an object")
    if not names.issuperset(element):
        raise Invalid("", UNKNOWN_ELEMENT)  # the key is input: its parent is named instead


def _array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(path, "expected an array")
    return value
