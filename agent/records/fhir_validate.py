"""``full`` FHIR validation: every element by the ``fhir.resources`` R4B models
(4.0.1-compatible), then the ``essential`` checks for what the models let through (required
codes, numbers given as strings or beyond a double, JSON null, ids over 64 characters, ...),
so that ``full`` refuses everything ``essential`` refuses.

fhir.resources 8 defaults to R5, so everything here goes through ``fhir.resources.R4B``.
Pydantic's messages quote the offending input; a record's values must never reach an error,
so messages are rebuilt from the error *type* and *location* only, and an unknown key (the
last part of an ``extra_forbidden`` location: input, not schema) is left out of the path.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import ValidationError

from agent.errors import FhirError
from agent.records import fhir_essential
from agent.records.fhir_r4 import DEEP_TYPES, UNKNOWN_ELEMENT, check_resource_type, element_name
from agent.types import ElementReach

# pydantic error type -> PHI-free wording
_WORDING: dict[str, str] = {
    "missing": "required element is missing",
    "extra_forbidden": UNKNOWN_ELEMENT,
    "value_error": "value does not match the FHIR datatype",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "decimal_type": "expected a number",
    "decimal_parsing": "expected a number",
    "bool_type": "expected a boolean",
    "bool_parsing": "expected a boolean",
    "list_type": "expected an array",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "string_pattern_mismatch": "value does not match the FHIR datatype",
    "literal_error": "value is not an allowed code",
    "enum": "value is not an allowed code",
    # fhir.resources' own type check of an element (e.g. an array where R4 has one object,
    # as DSTU2's ``_family`` extension list on a now single ``family``)
    "model_validation_format": "value is not of the element's FHIR type",
}


@cache
def model_class(resource_type: str) -> Any:
    """The R4B model class for a resource type name; FhirError if R4 defines no such type."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError):
        raise FhirError("resourceType is not a FHIR R4 resource type") from None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{element_name(part)}"
    return out


def describe(exc: ValidationError, where: str) -> str:
    """A PHI-free summary of a validation error: first three (path, cause) pairs."""
    parts = []
    for error in exc.errors()[:3]:
        loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
        if loc[-1:] == ("root",):  # fhir.resources' validators report at a synthetic "root"
            loc = loc[:-1]
        if error["type"] == "extra_forbidden":  # the last part is the input's unknown key
            loc = loc[:-1]
        parts.append(f"{where}{_path(loc)}: {_WORDING.get(error['type'], error['type'])}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate(resource: dict[str, Any], where: str, reach: ElementReach | None = None) -> None:
    """Raise FhirError naming ``where`` and the element path if ``resource`` is not valid R4.

    ``where`` names the place in the input (``Bundle.entry[3].resource``), never a value.
    Types outside ``DEEP_TYPES`` are only checked to be R4 resource types: the agent does not
    read them and validating every Condition of a large export would cost for nothing.
    ``reach``: what the mapping's FHIRPath reads, checked by the ``essential`` rules too.
    """
    resource_type = check_resource_type(resource, where)
    if resource_type in DEEP_TYPES:
        _model_validate(resource, resource_type, where)
    fhir_essential.validate(resource, where, reach)


def validate_whole(resource: dict[str, Any], where: str) -> None:
    """A resource of any type validated in full by its R4B model, then the ``essential``
    checks: for a contained resource a mapping's FHIRPath can reach (its type is open)."""
    _model_validate(resource, check_resource_type(resource, where), where)
    fhir_essential.validate(resource, where)


def _model_validate(resource: dict[str, Any], resource_type: str, where: str) -> None:
    try:
        model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        raise FhirError(f"{resource_type} at {describe(exc, where)}") from None


def validate_bundle_shell(bundle: dict[str, Any], where: str) -> None:
    """Validate a Bundle without its entries' resources (those are validated one by one)."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FhirError(f"Bundle at {where}.entry: expected an array of objects")
    shell = {**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"} for e in entries]}
    if not entries:
        shell.pop("entry")
    try:
        model_class("Bundle").model_validate(shell)
    except ValidationError as exc:
        raise FhirError(f"Bundle at {describe(exc, where)}") from None
    fhir_essential.validate_bundle_shell(bundle, where)
