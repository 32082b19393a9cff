"""The ``essential`` mode's fast path (``fhir_accept``) against its precise checks: whatever
the fast path accepts, the precise checks accept with the same resources in the same places,
and every parse ends as the precise checks alone would end it, the same refusal with the same
message. On every FHIR fixture, on the broken elements of the other records tests, and on
breakages generated element by element; the reaches of the demo and local-site mappings,
none, and one that reaches everything."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from agent.bundle.manifest import BundleManifest
from agent.errors import FhirError, RecordError
from agent.jsontext import load_json
from agent.limits import Limits
from agent.mapping import load_mapping
from agent.records import parse_records
from agent.records.config import FhirValidation
from agent.records.fhir_accept import _DATES, _DATETIMES, _INSTANTS, _printable, accept_document
from agent.records.fhir_datatypes import DATE, DATETIME, INSTANT, Invalid, when
from agent.records.fhir_json import Check, _accept_lines, locate_precisely
from agent.records.grouping import Located
from agent.types import ElementReach, RecordFormat
from bench.inputs import vitals_bundle
from tests.mapping.mapping_builders import manifest_document
from tests.records.test_records_fhir_essential import _ENCOUNTER, _REFUSED, _REFUSED_ENCOUNTER
from tests.records.test_records_fhir_read import _READ_BREAKAGES

ROOT = Path(__file__).resolve().parents[2]
FHIR = ROOT / "fixtures" / "fhir"
EXTERNAL = ROOT / "fixtures" / "external" / "fhir"
LIMITS = Limits()
DEMO: dict[str, Any] = json.loads((FHIR / "demo-patient-bundle.json").read_bytes())


def _reach(mapping: str) -> ElementReach:
    manifest = BundleManifest.model_validate(manifest_document())
    return load_mapping(ROOT / "config" / "mappings" / mapping, manifest).reach


REACHES: dict[str, ElementReach | None] = {
    "none": None,
    "demo": _reach("demo-site.yaml"),
    "local": _reach("local-site.yaml"),
    "nothing coded": ElementReach(codes=frozenset({("urn:x", "no-such-code")})),
    "everything": ElementReach(
        tuple((kind, None) for kind in ("Encounter", "Observation", "Patient"))
    ),
}


def _precisely(doc: Any, reach: ElementReach | None) -> list[Located] | str:
    """What the precise checks alone make of ``doc``: its resources, or the refusal."""
    found: list[Located] = []
    try:
        locate_precisely(doc, "", found, LIMITS, Check(FhirValidation.essential, reach))
    except FhirError as refused:
        return str(refused)
    return found


def _places(found: list[Located]) -> list[tuple[int, str, str | None]]:
    return [(id(resource), where, full_url) for resource, where, full_url in found]


def _assert_agree(doc: Any, reach: ElementReach | None) -> bool:
    """The fast path agrees with the precise checks on ``doc`` (as JSON text would carry
    it), and ``parse_records`` ends as they do; whether the fast path accepted it."""
    body = json.dumps(doc).encode()
    try:
        parsed = load_json(body, "body")
    except RecordError:
        return False  # not JSON the agent reads: no resource to check
    precise = _precisely(parsed, reach)
    fast = accept_document(parsed, "", reach, LIMITS.records_per_request_max)
    if fast is not None:
        assert not isinstance(precise, str), precise
        assert _places(fast) == _places(precise)
    try:
        parse_records(body, RecordFormat.fhir_json, limits=LIMITS, reach=reach)
        ended = "accepted"
    except FhirError as refused:
        ended = str(refused)
    assert ended == (precise if isinstance(precise, str) else "accepted")
    return fast is not None


# --- fixtures -----------------------------------------------------------------------------


def _fixture_documents() -> Iterator[tuple[str, Any]]:
    for path in sorted([*FHIR.iterdir(), *EXTERNAL.rglob("*.json")]):
        if path.suffix == ".json":
            yield path.name, json.loads(path.read_bytes())
        elif path.suffix == ".ndjson":
            for number, line in enumerate(path.read_bytes().splitlines(), start=1):
                if line.strip():
                    yield f"{path.name}:{number}", json.loads(line)
    yield "vitals bundle", json.loads(vitals_bundle())


FIXTURES = dict(_fixture_documents())


@pytest.mark.parametrize("reach", REACHES.values(), ids=REACHES.keys())
@pytest.mark.parametrize("name", FIXTURES)
def test_both_paths_agree_on_every_fixture(name: str, reach: ElementReach | None) -> None:
    _assert_agree(FIXTURES[name], reach)


@pytest.mark.parametrize("reach", ["none", "demo", "local", "nothing coded"])
@pytest.mark.parametrize(
    "name", ["demo-patient-bundle.json", "vitals bundle", "multi-patient.ndjson:3"]
)
def test_the_fast_path_takes_the_usual_input(name: str, reach: str) -> None:
    """Not a correctness rule but the point of the fast path: the bench inputs (and an NDJSON
    line) never fall back to the precise checks."""
    assert _assert_agree(FIXTURES[name], REACHES[reach])


def _ndjson_precisely(body: bytes, reach: ElementReach | None) -> list[Located] | str:
    """What the precise checks alone make of NDJSON, line by line."""
    found: list[Located] = []
    check = Check(FhirValidation.essential, reach)
    try:
        for number, line in enumerate(body.splitlines(), start=1):
            if line.strip():
                doc = load_json(line, f"line {number}", FhirError)
                locate_precisely(doc, f"line {number}: ", found, LIMITS, check)
    except FhirError as refused:
        return str(refused)
    return found


def _assert_ndjson_agrees(lines: list[Any], reach: ElementReach | None) -> bool:
    """As ``_assert_agree``, for the lines of an NDJSON body taken in one pass."""
    body = b"\n".join(json.dumps(line).encode() for line in lines)
    precise = _ndjson_precisely(body, reach)
    fast = _accept_lines(body, LIMITS, reach)
    if fast is not None:
        assert not isinstance(precise, str), precise
        assert [(w, u) for _, w, u in fast] == [(w, u) for _, w, u in precise]
        assert [r for r, _, _ in fast] == [r for r, _, _ in precise]
    try:
        parse_records(body, RecordFormat.fhir_ndjson, limits=LIMITS, reach=reach)
        ended = "accepted"
    except FhirError as refused:
        ended = str(refused)
    assert ended == (precise if isinstance(precise, str) else "accepted")
    return fast is not None


_NDJSON = {
    name: [json.loads(line) for line in (FHIR / name).read_bytes().splitlines() if line.strip()]
    for name in ("multi-patient.ndjson", "demo-ward-export.ndjson")
}


@pytest.mark.parametrize("reach", ["none", "demo"])
@pytest.mark.parametrize("name", _NDJSON)
def test_ndjson_in_one_pass_agrees_line_by_line(name: str, reach: str) -> None:
    """Every line of the fixtures taken in one pass; then each line of the first few broken
    in every generated way, with the lines around it intact."""
    lines = _NDJSON[name]
    assert _assert_ndjson_agrees(lines, REACHES[reach])
    for index in range(3):
        for _, breakage in _breakages(lines[index]):
            broken = copy.deepcopy(lines[: index + 2])
            breakage(broken[index])
            _assert_ndjson_agrees(broken, REACHES[reach])


# --- the other records tests' broken elements ---------------------------------------------

_BROKEN: list[tuple[str, Callable[[Any], Any], Any]] = [
    *((f"essential: {name}", mutate, DEMO) for name, mutate, _ in _REFUSED),
    *((f"read: {name}", mutate, DEMO) for name, mutate, _ in _READ_BREAKAGES),
    *((f"encounter: {name}", mutate, _ENCOUNTER) for name, mutate, _ in _REFUSED_ENCOUNTER),
]


@pytest.mark.parametrize("reach", ["none", "demo", "everything"])
@pytest.mark.parametrize(("mutate", "doc"), [pytest.param(m, d, id=name) for name, m, d in _BROKEN])
def test_both_paths_agree_on_the_broken_elements(mutate: Any, doc: Any, reach: str) -> None:
    broken = copy.deepcopy(doc)
    mutate(broken)
    assert not _assert_agree(broken, REACHES[reach])


# --- generated breakages ------------------------------------------------------------------

_STRINGS: list[Any] = [" x", "x ", "a  b", "a b", "", "x\ny", "\t", "é", 1, 1.5, None, True, [], {}]
_TIMES: list[Any] = [
    "2026-02-30",
    "2026-03-15",
    "2026-03-15T25:00:00Z",
    "2026-02-29T10:00:00Z",
    "2024-02-29T10:00:00Z",
    "2026-04-31T10:00:00Z",
    "0000-03-15T10:00:00Z",
    "2026-03-15T10:00:60Z",
    "2026-03-15T10:00:00+14:01",
    "2026-03-15T10:00:00",
    "2026-03-15T10:00:00.1234567890Z",
    "2026-03-15 10:00:00Z",
    "2026-03-15T10:00:00Z\n2026-03-15T10:00:00Z",
]
_NUMBERS: list[Any] = ["1", True, None, 10**400, 2**31, -(2**31) - 1, 1.5, [1]]
_TIME_KEYS = {"effectiveDateTime", "effectiveInstant", "issued", "start", "end", "birthDate"}


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*path, index))


def _breakages(doc: Any) -> Iterator[tuple[tuple[Any, ...], Callable[[Any], None]]]:
    """(where, what to do to a copy of ``doc``) for every element: each string, number and
    time replaced by wrong ones, each key dropped, an unknown key and a second value[x] or
    effective[x] added, each object and array swapped for the other."""
    for path, value in _paths(doc):
        if not path:
            continue
        holder, key = path[:-1], path[-1]
        replacements: list[Any] = [[value] if isinstance(value, dict) else {}]
        if isinstance(value, str):
            replacements = _STRINGS + (_TIMES if key in _TIME_KEYS else [])
            replacements += [value + "\n" + value, value + " ", "x" * 65]
        elif isinstance(value, int | float):
            replacements = _NUMBERS
        for replacement in replacements:
            yield path, _setter(holder, key, replacement)
        if isinstance(key, str):
            yield path, _dropper(holder, key)
        if isinstance(value, dict):
            for extra in ("SECRET", "valueString", "valueBoolean", "effectiveInstant", "_id"):
                if extra not in value:
                    yield path, _setter(path, extra, "2026-03-15T10:00:00Z")
        if isinstance(value, list):
            yield path, _setter(path, len(value), {})


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _setter(holder: tuple[Any, ...], key: Any, value: Any) -> Callable[[Any], None]:
    def apply(doc: Any) -> None:
        target = _at(doc, holder)
        if isinstance(target, list) and key == len(target):
            target.append(value)
        else:
            target[key] = copy.deepcopy(value)

    return apply


def _dropper(holder: tuple[Any, ...], key: str) -> Callable[[Any], None]:
    return lambda doc: _at(doc, holder).pop(key)


def _small_bundle() -> dict[str, Any]:
    """The demo Patient, a heart rate, a blood pressure panel and an Encounter, each with
    its fullUrl or a transaction request: every structure the fast path walks."""
    entries = DEMO["entry"]
    panel = next(e for e in entries if "component" in e["resource"])
    encounter = {"fullUrl": "urn:uuid:e1", "resource": dict(_ENCOUNTER)}
    return copy.deepcopy(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [entries[0], entries[1], panel, encounter],
        }
    )


_GENERATED = [
    ("demo", _small_bundle()),
    ("vitals", json.loads(vitals_bundle())),
    ("single", copy.deepcopy(DEMO["entry"][1]["resource"])),
]


@pytest.mark.parametrize("reach", ["none", "demo", "local", "nothing coded"])
@pytest.mark.parametrize("doc", [pytest.param(d, id=n) for n, d in _GENERATED])
def test_both_paths_agree_on_generated_breakages(doc: Any, reach: str) -> None:
    checked = accepted = 0
    for _, breakage in _breakages(doc):
        broken = copy.deepcopy(doc)
        breakage(broken)
        accepted += _assert_agree(broken, REACHES[reach])
        checked += 1
    assert checked > 300 and 0 < accepted < checked


# --- the date and time expressions --------------------------------------------------------


def _precisely_taken(value: str, match: Callable[[str], Any]) -> bool:
    try:
        when(value, "", match)
    except Invalid:
        return False
    return True


def _fast_takes(element: str, value: str) -> bool:
    """Whether the fast path takes ``value`` as a Patient's birthDate (``birthDate``), an
    Observation's ``effectiveDateTime`` or its ``issued`` (an instant)."""
    if element == "birthDate":
        resource: dict[str, Any] = {"resourceType": "Patient", element: value}
    else:
        resource = {"resourceType": "Observation", "status": "final", "code": {}, element: value}
    return accept_document(resource, "", None, 1) is not None


_RULES = {"birthDate": DATE, "effectiveDateTime": DATETIME, "issued": INSTANT}


_EXPRESSIONS = {"birthDate": _DATES, "effectiveDateTime": _DATETIMES, "issued": _INSTANTS}


def _assert_taken_alike(value: str) -> bool:
    """The fast path takes ``value`` exactly where the precise checks do, as each element;
    its expression never takes more. Whether the expression took it as an instant."""
    for element, rule in _RULES.items():
        precise = _precisely_taken(value, rule)
        assert _fast_takes(element, value) == precise, (element, value)
        assert not _EXPRESSIONS[element](value) or precise, (element, value)
    return _INSTANTS(value) is not None


def test_every_day_is_taken_as_the_precise_checks_take_it() -> None:
    """Each calendar day of a leap year, a common year and the years at both ends, as a date,
    a dateTime and an instant, and 29 February of every year: the expressions alone take
    them (the leap years are in them), as the precise checks do. Months and days past their
    bounds, partial dates and years below 1000: the fast path takes them exactly where the
    precise checks do, its expressions never where those refuse."""
    for year in (1000, 2023, 2024, 9999):
        for ordinal in range(date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal() + 1):
            day = date.fromordinal(ordinal).isoformat()
            assert _DATES(day) and _DATETIMES(day) and _INSTANTS(f"{day}T10:00:00Z"), day
    for year in range(1000, 10000):
        leap = f"{year:04}-02-29"
        leap_day = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        assert bool(_DATES(leap)) == leap_day == _precisely_taken(leap, DATE), year
        assert bool(_INSTANTS(f"{leap}T10:00:00+01:00")) == leap_day, year
    for year, month, day_of_month in itertools.product((0, 1, 999, 2023), range(14), range(33)):
        value = f"{year:04}-{month:02}-{day_of_month:02}"
        for candidate in (value, f"{value}T10:00:00Z", value[:7], value[:4]):
            _assert_taken_alike(candidate)
    assert _DATES("1987") and _DATETIMES("2026-03") and not _INSTANTS("2026-03-15")


def test_every_clock_is_taken_as_the_precise_checks_take_it() -> None:
    """Hours, minutes and seconds at and past their bounds, fractions of every length the
    expression allows and one more, offsets at and past theirs: the fast path takes each
    where the precise checks do, and its expression alone takes the usual forms."""
    by_expression = 0
    for h, m, s, fraction, offset in itertools.product(
        (0, 9, 19, 23, 24, 29),
        (0, 59, 60),
        (0, 59, 60),
        ("", ".1", ".123456", ".123456789", ".1234567890"),
        ("Z", "+00:00", "-00:00", "+13:59", "-14:00", "+14:01", "+15:00", ""),
    ):
        by_expression += _assert_taken_alike(f"2026-03-15T{h:02}:{m:02}:{s:02}{fraction}{offset}")
    assert by_expression == 4 * 2 * 2 * 4 * 5


def test_printable_is_str_isprintable() -> None:
    """The ASCII shortcut answers as ``str.isprintable`` for every character it can meet
    there, and text beyond ASCII is asked of ``str.isprintable`` itself."""
    for point in [*range(0x100), 0x2028, 0x3000, 0xFEFF, 0x1F600]:
        text = f"a{chr(point)}b"
        assert _printable(text) == text.isprintable(), point
