"""FHIR R4 JSON in: a single resource, a Bundle of any type (nested Bundles too), or NDJSON
(bulk export, one resource or Bundle per line). Every resource is located (where it sat in
the input) so that errors can say where without saying what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from agent.errors import FhirError
from agent.jsontext import load_json
from agent.limits import Limits
from agent.records import fhir_essential, fhir_validate
from agent.records.config import FhirValidation, RecordsConfig
from agent.records.fhir_accept import accept_document
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
    (``reach``: what the mapping's FHIRPath reads, see ``parse_records``)."""
    found: list[Located] = []
    _locate(_load(body, "body"), "", found, limits, Check(config.fhir_validation, reach))
    return group_by_patient(found)


def parse_fhir_ndjson(
    body: bytes, limits: Limits, config: RecordsConfig, reach: ElementReach | None = None
) -> list[PatientRecord]:
    """NDJSON: each non-blank line one resource or Bundle; all lines grouped together."""
    found: list[Located] = []
    check = Check(config.fhir_validation, reach)
    for number, line in enumerate(body.splitlines(), start=1):
        if line.strip():
            _locate(_load(line, f"line {number}"), f"line {number}: ", found, limits, check)
    return group_by_patient(found)


def _locate(doc: Any, line: str, found: list[Located], limits: Limits, check: Check) -> None:
    """The resources of ``doc`` (``line``: its NDJSON line prefix) validated and added to
    ``found``: in the ``essential`` mode through its fast path (``fhir_accept``) when that
    accepts the whole document, else, and in the ``full`` mode, by ``locate_precisely``."""
    if check.mode is FhirValidation.essential:
        room = limits.records_per_request_max - len(found)
        accepted = accept_document(doc, line, check.reach, room)
        if accepted is not None:
            found += accepted
            return
    locate_precisely(doc, line, found, limits, check)


def locate_precisely(
    doc: Any, line: str, found: list[Located], limits: Limits, check: Check
) -> None:
    """``_locate`` by the mode's own checks alone, which decide every refusal and its
    message (and, in tests, what the fast path must agree with)."""
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
