"""The one entry point from bytes to ``PatientRecord``s. Formats are looked up in a table
and imported lazily, so an HL7-only site never imports the FHIR models and vice versa."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from agent.errors import RecordError, UnsupportedMediaType
from agent.limits import Limits
from agent.records.config import RecordsConfig
from agent.types import ElementReach, PatientRecord, RecordFormat

# format -> (module, function(body, limits, config, reach))
_READERS: dict[RecordFormat, tuple[str, str]] = {
    RecordFormat.fhir_json: ("agent.records.fhir_json", "parse_fhir_json"),
    RecordFormat.fhir_ndjson: ("agent.records.fhir_json", "parse_fhir_ndjson"),
    RecordFormat.hl7v2: ("agent.records.hl7v2", "parse_hl7v2"),
}

_DEFAULT_CONFIG = RecordsConfig()
_LOADED: dict[RecordFormat, Callable[..., list[PatientRecord]]] = {}  # readers imported so far


def parse_records(
    body: bytes,
    fmt: RecordFormat,
    *,
    limits: Limits,
    config: RecordsConfig | None = None,
    reach: ElementReach | None = None,
) -> list[PatientRecord]:
    """Parse and validate ``body`` into one record per patient (FHIR dicts throughout).

    ``reach``: what the serving mapping's FHIRPath features can read (``SiteMapping.reach``);
    the ``essential`` mode checks those elements too. Without it, only what the agent's own
    code reads is checked there.

    Raises FhirError / Hl7Error (both RecordError) naming where and why, never a value;
    UnsupportedMediaType for a format without a reader; RecordError when ``body`` exceeds
    ``limits.http_body_max``.
    """
    if len(body) > limits.http_body_max:
        raise RecordError(f"record body larger than {limits.http_body_max} bytes")
    reader = _LOADED.get(fmt) if isinstance(fmt, RecordFormat) else None
    if reader is None:
        reader = _import_reader(fmt)
    return reader(body, limits, config or _DEFAULT_CONFIG, reach)


def _import_reader(fmt: RecordFormat | str) -> Callable[..., list[PatientRecord]]:
    """The reader of ``fmt``, imported on first use (then kept in ``_LOADED``)."""
    try:
        kind = RecordFormat(fmt)
        module, name = _READERS[kind]
    except (KeyError, ValueError):
        raise UnsupportedMediaType("no reader for this record format") from None
    reader: Callable[..., list[PatientRecord]] = getattr(importlib.import_module(module), name)
    _LOADED[kind] = reader
    return reader
