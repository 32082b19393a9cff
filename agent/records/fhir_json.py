"""FHIR R4 JSON in: a single resource, a Bundle of any type (nested Bundles too), or NDJSON
(bulk export, one resource or Bundle per line). Every resource is located (where it sat in
the input) so that errors can say where without saying what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from agent.errors import FhirError
from agent.jsontext import load_json
from agent.limits import Limits
from agent.records import fhir_essential, fhir_validate
from agent.records.config import FhirValidation, RecordsConfig
from agent.records.fhir_accept import Acceptance, accept_document
from agent.records.grouping import Located, entry_resource, group_by_patient
from agent.types import ElementReach, PatientRecord

_MAX_BUNDLE_DEPTH = 3  # a Bundle inside a Bundle inside a Bundle, no deeper


class _Validator(NamedTuple):
    """One validation mode: a resource check ``(dict, where, reach) -> None`` and a Bundle
    shell check ``(dict, where) -> None``, both raising FhirError."""

    resource: Callable[[dict[str, Any], str, ElementReach | None], None]
    bundle_shell: Callable[[dict[str, Any], str], None]


# Neither module imports fhir.resources at import time; ``full`` loads it on first use.
_VALIDATORS = {
    FhirValidation.full: _Validator(fhir_validate.validate, fhir_validate.validate_bundle_shell),
    FhirValidation.essential: _Validator(
        fhir_essential.validate, fhir_essential.validate_bundle_shell
    ),
}


def parse_fhir_json(
    body: bytes, limits: Limits, config: RecordsConfig, reach: ElementReach | None = None
) -> list[PatientRecord]:
    """One JSON document: a resource or a Bundle, validated as ``config.fhir_validation`` says
    (``reach``: what the mapping's FHIRPath reads, see ``parse_records``). In the
    ``essential`` mode its fast path (``fhir_accept``) goes first; on any doubt the mode's own
    checks decide (``locate_precisely``)."""
    doc = _load(body, "body")
    found = None
    if config.fhir_validation is FhirValidation.essential:
        found = accept_document(doc, "", reach, limits.records_per_request_max)
    if found is None:
        found = []
        locate_precisely(doc, "", found, limits, Check(config.fhir_validation, reach))
    return group_by_patient(found)


def parse_fhir_ndjson(
    body: bytes, limits: Limits, config: RecordsConfig, reach: ElementReach | None = None
) -> list[PatientRecord]:
    """NDJSON: each non-blank line one resource or Bundle; all lines grouped together. The
    fast path, in the ``essential`` mode, takes every line in one pass."""
    found = None
    if config.fhir_validation is FhirValidation.essential:
        found = _accept_lines(body, limits, reach)
    if found is None:
        found = []
        check = Check(config.fhir_validation, reach)
        for number, line in _lines(body):
            doc = _load(line, f"line {number}")
            locate_precisely(doc, f"line {number}: ", found, limits, check)
    return group_by_patient(found)


def _lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of ``body``, numbered from 1."""
    for number, line in enumerate(body.splitlines(), start=1):
        if line.strip():
            yield number, line


def _accept_lines(body: bytes, limits: Limits, reach: ElementReach | None) -> list[Located] | None:
    """Every NDJSON line through the fast path in one pass, its deferred checks run once;
    None on doubt or on a line that is not JSON (the precise walk then says what the first
    fault is)."""
    acceptance = Acceptance(reach)
    found: list[Located] = []
    for number, line in _lines(body):
        try:
            doc = _load(line, "")
        except FhirError:
            return None
        if not acceptance.take(doc, f"line {number}: ", found):
            return None
        if len(found) > limits.records_per_request_max:
            return None
    return found if acceptance.holds() else None


def locate_precisely(
    doc: Any, line: str, found: list[Located], limits: Limits, check: Check
) -> None:
    """Add the resources of ``doc`` (``line``: its NDJSON line prefix) to ``found``, each
    validated by the mode's own checks, which decide every refusal and its message (and,
    in tests, what the fast path must agree with)."""
    _walk(doc, None, line, None, found, 0, limits, check)


class Check(NamedTuple):
    """The validation mode and the reach it checks, for one parse."""

    mode: FhirValidation
    reach: ElementReach | None


def _load(text: bytes, where: str) -> Any:
    return load_json(text, where, FhirError)


def _walk(
    doc: Any,
    path: str | None,
    line: str,
    full_url: str | None,
    out: list[Located],
    depth: int,
    limits: Limits,
    check: Check,
) -> None:
    """Collect the resources of ``doc``; ``path`` is its place (None at the top), ``line`` the
    NDJSON line prefix."""
    if not isinstance(doc, dict):
        raise FhirError(f"{line}{path or 'resource'}: expected a JSON object")
    is_bundle = doc.get("resourceType") == "Bundle"
    name = path if path is not None else ("Bundle" if is_bundle else "resource")
    if not is_bundle:
        _take(doc, line + name, full_url, out, limits, check)
        return
    if depth >= _MAX_BUNDLE_DEPTH:
        raise FhirError(
            f"Bundle at {line}{name}: Bundles nested more than {_MAX_BUNDLE_DEPTH} deep"
        )
    _VALIDATORS[check.mode].bundle_shell(doc, line + name)
    for index, entry in enumerate(doc.get("entry", [])):
        resource = entry_resource(entry)
        if resource is None:  # GET/DELETE and transaction-response entries carry none
            continue
        place = f"{name}.entry[{index}].resource"
        if isinstance(resource, dict) and resource.get("resourceType") != "Bundle":
            _take(resource, line + place, entry.get("fullUrl"), out, limits, check)
        else:
            _walk(resource, place, line, entry.get("fullUrl"), out, depth + 1, limits, check)


def _take(
    resource: dict[str, Any],
    where: str,
    full_url: str | None,
    out: list[Located],
    limits: Limits,
    check: Check,
) -> None:
    """A resource (not a Bundle) validated and collected, within the per-request bound."""
    _VALIDATORS[check.mode].resource(resource, where, check.reach)
    out.append((resource, where, full_url))
    if len(out) > limits.records_per_request_max:
        raise FhirError(f"more than {limits.records_per_request_max} resources in one request")
