"""The ``essential`` checks' fast path: a FHIR document of the common shape accepted in a
few Python steps per resource, or no answer at all.

An ``Acceptance`` takes the parsed documents of one body (a JSON document, or every line of
NDJSON) and gives their resources, located exactly as the precise walk (``fhir_json``)
locates them, when it can show that every check of the ``essential`` mode
(``fhir_essential``) passes; on any doubt the body's resources are not taken from it: the
precise checks run from the start and decide, so every refusal keeps its message and path
byte for byte (``accept_document`` does this for one document). What it accepts is a subset
of what they accept: the same rules, each applied in a narrower form, and nothing else left
out. tests/records/test_records_fhir_accept.py holds both paths to that on every fixture and
on generated breakages.

Where the time goes instead (docs/records.md has the figures):

- exact types (``type(x) is dict``): the JSON reader makes only dicts, lists, strings,
  numbers, booleans and None, and anything else is a doubt;
- the string values are collected while the structures are walked and checked together at
  the end, a join and a few C calls per datatype rule (uri, code, string, id, dateTime)
  rather than a Python call per value; where that joined check says no (a code that is not
  printable, say), each value of the kind is asked of the precise rule instead, so a value
  off the usual form costs its own check, not the whole document's;
- dates, dateTimes and instants by expressions that also hold the calendar (the months'
  lengths, the leap years), where the precise checks ask ``datetime`` after theirs;
- Encounters, and resources a mapping's FHIRPath reaches, go to the precise checks
  themselves (a doubt if they refuse).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from agent.errors import FhirError
from agent.records import fhir_essential
from agent.records.fhir_datatypes import (
    DATE,
    DATETIME,
    ID,
    ID_PATTERN,
    INSTANT,
    INTEGER_MAX,
    STRING,
    URI,
    Invalid,
    is_code,
    is_string,
    is_uri,
    text,
    when,
)
from agent.records.fhir_essential import EFFECTIVE_KEYS, VALUE_KEYS
from agent.records.fhir_r4 import DEEP_TYPES, ELEMENTS, REQUIRED_CODES, RESOURCE_TYPES
from agent.records.grouping import Located, entry_resource
from agent.types import ElementReach

_CHOICES = EFFECTIVE_KEYS | VALUE_KEYS
# The choice elements an Observation may hold (at most one effective[x], one value[x]) ->
# (its effective[x], its value[x]); any other set is a doubt. Likewise for a component.
_SHAPES: dict[frozenset[str], tuple[str | None, str | None]] = {
    frozenset(key for key in (effective, value) if key is not None): (effective, value)
    for effective in (None, *EFFECTIVE_KEYS)
    for value in (None, *VALUE_KEYS)
}
_VALUE_SHAPES = {frozenset(key for key in (value,) if key): value for value in ("", *VALUE_KEYS)}
_DOUBLE_MAX = 2**1000  # an int smaller in magnitude is a double's (a module constant: an
# expression this large is not folded at compile time)

_STATUS = REQUIRED_CODES["Observation", "status"]
_BUNDLE_TYPES = REQUIRED_CODES["Bundle", "type"]
_GENDERS = REQUIRED_CODES["Patient", "gender"]
_PATIENT = ELEMENTS["Patient"]
_OBSERVATION, _COMPONENT, _CONCEPT, _CODING, _QUANTITY, _REFERENCE, _PERIOD = (
    ELEMENTS[name]
    for name in (
        "Observation",
        "ObservationComponent",
        "CodeableConcept",
        "Coding",
        "Quantity",
        "Reference",
        "Period",
    )
)
_BUNDLE, _ENTRY = ELEMENTS["Bundle"], ELEMENTS["BundleEntry"]

# One id per line: the id expression repeated (an id holds no newline, so the repetition
# never needs to give a line back: possessive, which the expression engine runs faster).
_IDS = re.compile(f"{ID_PATTERN}(?:\n{ID_PATTERN})*+").fullmatch
# The date and time datatypes in narrower forms whose every match the precise checks take
# (tests/records pins them against those checks): years from 1000, a real calendar day (the
# months' lengths and the leap years in the expression, so no ``datetime`` call), hours to
# 23, fractions of 1 to 9 digits, an offset to 14:00. Each is matched one per line.
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
# Divisible by 4 and not by 100, or by 400.
_LEAP_YEAR = r"(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
_DAY = rf"(?:[1-9][0-9]{{3}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
DATE_PATTERN = rf"(?:{_DAY}|[1-9][0-9]{{3}}(?:-(?:0[1-9]|1[0-2]))?)"  # a day, month or year
INSTANT_PATTERN = (
    rf"{_DAY}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,9}})?"
    r"(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00)"
)
DATETIME_PATTERN = f"(?:{INSTANT_PATTERN}|{DATE_PATTERN})"
_INSTANTS, _DATETIMES, _DATES = (
    re.compile(f"{pattern}(?:\n{pattern})*+").fullmatch
    for pattern in (INSTANT_PATTERN, DATETIME_PATTERN, DATE_PATTERN)
)
_CONTROLS = bytes(range(0x20)) + b"\x7f"  # the ASCII characters that are not printable


def _printable(text: str) -> bool:
    """``text.isprintable()``; for ASCII text (known at no cost), the same answer in less
    than half the time: no control character."""
    if text.isascii():
        return len(text.encode().translate(None, _CONTROLS)) == len(text)
    return text.isprintable()


def _codes_hold(codes: list[Any]) -> bool:
    """Every one of ``codes`` a printable FHIR code: not empty, no space at either end nor two
    together. Joined by ``|``, a code's ends show beside the separators (a code holding ``|``
    beside a space is left to the precise checks)."""
    joined = "|".join(codes)
    return (
        _printable(joined)
        and "" not in codes
        and "  " not in joined
        and " |" not in joined
        and "| " not in joined
        and not joined.startswith(" ")
        and not joined.endswith(" ")
    )


def _one_per_line(values: list[Any], match: Callable[[str], Any]) -> bool:
    """Every one of ``values`` matches the expression that ``match`` repeats line by line:
    joined by newlines and matched once, none holding a newline itself."""
    if not values:
        return True
    joined = "\n".join(values)
    return joined.count("\n") == len(values) - 1 and match(joined) is not None


class Acceptance:
    """One pass of the fast path over the documents of a body (one JSON document, or every
    line of NDJSON): what the served mapping reads, and the string values met so far, by
    datatype rule, checked together once the last document is taken (``holds``)."""

    __slots__ = (
        "codes",
        "dates",
        "datetimes",
        "ids",
        "instants",
        "own_observations",
        "own_patients",
        "reach",
        "strings",
        "uris",
        "wanted",
    )

    def __init__(self, reach: ElementReach | None) -> None:
        self.reach = reach
        self.wanted = reach.codes if reach is not None else None
        # Observations this path checks itself: those whose elements no FHIRPath reaches.
        self.own_observations = not fhir_essential.reached("Observation", reach)
        self.own_patients = not fhir_essential.reached("Patient", reach)
        self.strings: list[Any] = []  # FHIR string
        self.uris: list[Any] = []  # uri
        self.codes: list[Any] = []  # code (printable here)
        self.ids: list[Any] = []  # id (checked one per line: none may hold a newline)
        self.instants: list[Any] = []  # ``INSTANT_PATTERN``, one per line
        self.datetimes: list[Any] = []  # ``DATETIME_PATTERN``, one per line
        self.dates: list[Any] = []  # ``DATE_PATTERN``, one per line

    def take(self, doc: Any, line: str, out: list[Located]) -> bool:
        """Add the resources of ``doc`` (``line``: its NDJSON line prefix) to ``out``, located
        as the precise walk locates them, if every check but the deferred ones passes;
        False on doubt (``out`` is then of no use)."""
        if type(doc) is not dict:
            return False
        try:
            if doc.get("resourceType") == "Bundle":
                return _bundle(doc, line, self, out)
            if not _resource(doc, line + "resource", self):
                return False
        except TypeError:  # an unhashable value where a code is looked up: a doubt
            return False
        out.append((doc, line + "resource", None))
        return True

    def holds(self) -> bool:
        """Every value collected keeps the rule of its datatype: all of a kind together, in
        a few C calls (``_KINDS``), or, where that joined check says no (it may be narrower
        than the rule, or a value is wrong), each value of that kind by the precise rule."""
        kinds = (
            self.strings,
            self.uris,
            self.codes,
            self.ids,
            self.instants,
            self.datetimes,
            self.dates,
        )
        for (together, alone), values in zip(_KINDS, kinds, strict=True):
            if not (_together(together, values) or all(map(alone, values))):
                return False
        return True


def _together(check: Callable[[list[Any]], bool], values: list[Any]) -> bool:
    try:
        return check(values)
    except TypeError:  # a value that is not a string: the precise rule says why
        return False


def _strings_hold(strings: list[Any]) -> bool:
    """FHIR strings, none empty (the rule is on each character, so they are checked joined)."""
    joined = "".join(strings)
    return "" not in strings and (_printable(joined) or STRING(joined) is not None)


def _uris_hold(uris: list[Any]) -> bool:
    """FHIR uris (a rule on each character: checked joined)."""
    joined = "".join(uris)
    return (_printable(joined) and " " not in joined) or URI(joined) is not None


def _passes(
    check: Callable[[Any, str, Callable[[str], Any]], None], match: Callable[[str], Any]
) -> Callable[[Any], bool]:
    """A precise check of one value (``text`` or ``when`` with its datatype expression) as
    a predicate."""

    def one(value: Any) -> bool:
        try:
            check(value, "", match)
        except Invalid:
            return False
        return True

    return one


# Per kind of value collected, in ``Acceptance.holds``'s order: the check of them all at
# once, and the precise rule of one (``fhir_datatypes``), asked of each value only when the
# joined check fails.
_KINDS: tuple[tuple[Callable[[list[Any]], bool], Callable[[Any], bool]], ...] = (
    (_strings_hold, is_string),
    (_uris_hold, is_uri),
    (_codes_hold, is_code),
    (partial(_one_per_line, match=_IDS), _passes(text, ID)),
    (partial(_one_per_line, match=_INSTANTS), _passes(when, INSTANT)),
    (partial(_one_per_line, match=_DATETIMES), _passes(when, DATETIME)),
    (partial(_one_per_line, match=_DATES), _passes(when, DATE)),
)


def accept_document(
    doc: Any, line: str, reach: ElementReach | None, room: int
) -> list[Located] | None:
    """The resources of ``doc`` as the precise walk would locate them (``line``: its NDJSON
    line prefix), at most ``room`` of them, if every ``essential`` check passes on them with
    ``reach``; None when that is not shown (the precise walk then decides)."""
    acceptance = Acceptance(reach)
    out: list[Located] = []
    if acceptance.take(doc, line, out) and len(out) <= room and acceptance.holds():
        return out
    return None


def _bundle(bundle: dict[str, Any], line: str, check: Acceptance, out: list[Located]) -> bool:
    """A Bundle's shell (``fhir_essential.validate_bundle_shell``) and its resources; a
    Bundle inside it is a doubt."""
    entries = bundle.get("entry", [])
    if not (
        _BUNDLE.issuperset(bundle) and bundle.get("type") in _BUNDLE_TYPES and type(entries) is list
    ):
        return False
    uris = check.uris
    for index, entry in enumerate(entries):
        if type(entry) is not dict or not _ENTRY.issuperset(entry):
            return False
        full_url = None
        if "fullUrl" in entry:
            full_url = entry["fullUrl"]
            uris.append(full_url)
        resource = entry_resource(entry)
        if resource is None:
            continue
        where = f"{line}Bundle.entry[{index}].resource"
        if not _resource(resource, where, check):
            return False
        out.append((resource, where, full_url))
    return True


def _resource(resource: Any, where: str, check: Acceptance) -> bool:
    """One resource (not a Bundle) by ``fhir_essential.validate``'s rules."""
    if type(resource) is not dict:
        return False
    kind = resource.get("resourceType")
    if kind == "Observation" and check.own_observations:
        return _observation(resource, check)
    if kind == "Patient" and check.own_patients:
        return _patient(resource, check)
    if kind == "Bundle":
        return False
    if kind in RESOURCE_TYPES and kind not in DEEP_TYPES:
        return True  # its type is all that is checked
    try:
        fhir_essential.validate(resource, where, check.reach)
    except FhirError:
        return False
    return True


def _patient(patient: dict[str, Any], check: Acceptance) -> bool:
    """``fhir_essential._patient``."""
    if not (_PATIENT.issuperset(patient) and patient.get("gender", "unknown") in _GENDERS):
        return False
    if "id" in patient:
        check.ids.append(patient["id"])
    if "birthDate" in patient:
        check.dates.append(patient["birthDate"])
    return True


def _observation(observation: dict[str, Any], check: Acceptance) -> bool:
    """``fhir_essential._observation``: what every Observation is read for, then, if the
    mapping reads it (``check.wanted``), its values."""
    read = _concept(observation.get("code"), check)
    if not (
        read is not None
        and _OBSERVATION.issuperset(observation)
        and observation.get("status") in _STATUS
        and ("subject" not in observation or _reference(observation["subject"], check))
    ):
        return False
    components = observation.get("component", ())
    if type(components) is not list and components != ():
        return False
    for component in components:
        if type(component) is not dict or not _COMPONENT.issuperset(component):
            return False
        coded = _concept(component.get("code"), check)
        if coded is None:
            return False
        read = read or coded
    if not read:
        return True
    shape = _SHAPES.get(_CHOICES.intersection(observation))
    if shape is None:
        return False
    effective, value = shape
    if "id" in observation:
        check.ids.append(observation["id"])
    if "encounter" in observation and not _reference(observation["encounter"], check):
        return False
    if effective == "effectivePeriod":
        if not _period(observation[effective], check):
            return False
    elif effective == "effectiveDateTime":
        check.datetimes.append(observation[effective])
    elif effective == "effectiveInstant":
        check.instants.append(observation[effective])
    if "issued" in observation:
        check.instants.append(observation["issued"])
    if value == "valueQuantity":  # the usual kind, without ``_value``'s call
        if not _quantity(observation[value], check):
            return False
    elif value is not None and not _value(observation[value], value, check):
        return False
    for component in components:
        kind = _VALUE_SHAPES.get(VALUE_KEYS.intersection(component))
        if kind is None or (kind and not _value(component[kind], kind, check)):
            return False
    return True


def _value(value: Any, kind: str, check: Acceptance) -> bool:
    """``fhir_essential._value``: the value[x] kinds mapping reads; the others pass."""
    if kind == "valueQuantity":
        return _quantity(value, check)
    if kind == "valueCodeableConcept":
        return _concept(value, check) is not None
    if kind == "valueString":
        check.strings.append(value)
    elif kind == "valueInteger":
        return type(value) is int and -INTEGER_MAX - 1 <= value <= INTEGER_MAX
    elif kind == "valueBoolean":
        return type(value) is bool
    return True


def _concept(concept: Any, check: Acceptance) -> bool | None:
    """A CodeableConcept: None if off the common shape, else whether it carries one of the
    codes the mapping reads (``check.wanted``; None: any), as ``_coded_with`` matches them."""
    if type(concept) is not dict or not _CONCEPT.issuperset(concept):
        return None
    wanted = check.wanted
    coded = wanted is None
    codings = concept.get("coding", ())
    if type(codings) is not list and codings != ():
        return None
    for coding in codings:
        if type(coding) is not dict or not _CODING.issuperset(coding):
            return None
        system = ""
        if "system" in coding:
            system = coding["system"]
            check.uris.append(system)
        code = None
        if "code" in coding:
            code = coding["code"]
            check.codes.append(code)
        if wanted is not None and not coded:
            coded = (system, code) in wanted
    if "text" in concept:
        check.strings.append(concept["text"])
    return coded


def _quantity(quantity: Any, check: Acceptance) -> bool:
    if type(quantity) is not dict or not _QUANTITY.issuperset(quantity):
        return False
    if "value" in quantity:
        number = quantity["value"]
        if type(number) is not float and not (
            type(number) is int and -_DOUBLE_MAX < number < _DOUBLE_MAX
        ):
            return False
    if "unit" in quantity:
        check.strings.append(quantity["unit"])
    if "system" in quantity:
        check.uris.append(quantity["system"])
    if "code" in quantity:
        check.codes.append(quantity["code"])
    return True


def _reference(reference: Any, check: Acceptance) -> bool:
    if type(reference) is not dict or not _REFERENCE.issuperset(reference):
        return False
    if "reference" in reference:
        check.strings.append(reference["reference"])
    return True


def _period(period: Any, check: Acceptance) -> bool:
    if type(period) is not dict or not _PERIOD.issuperset(period):
        return False
    for key in ("start", "end"):
        if key in period:
            check.datetimes.append(period[key])
    return True
