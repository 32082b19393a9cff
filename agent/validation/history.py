"""A site's record history, one patient at a time, cut exactly as the drop folder cuts it.

The batch readers (``agent.batch.formats``) group FHIR NDJSON exports and Bundles
into one record per patient, so validation scores for each patient what the live path
would group for it. Each patient also carries every name an outcomes file may use for it
(``Patient/<id>``, the bare id, each ``Patient.identifier`` value) and the sex and birth
date its subgroups are drawn from. HL7 v2 files are not read here yet: a message is one
record there, not a patient's history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from agent.batch.fhir_records import flat_entries
from agent.batch.formats import InputFormat, detect_format, read_items
from agent.batch.items import BadItem, ReadContext, RecordItem
from agent.errors import ConfigError
from agent.limits import Limits
from agent.mapping.facts import last_day, parse_time
from agent.types import RecordFormat

READABLE = frozenset({InputFormat.ndjson, InputFormat.fhir_json})


@dataclass(frozen=True)
class PatientHistory:
    """Everything the input holds about one patient, ready for the pipeline.

    ``refused`` is the reader's reason when the patient's record could not be read at all
    (then ``body`` is empty); ``keys`` is empty when not even the patient is known."""

    body: bytes
    format: RecordFormat
    keys: frozenset[str]
    gender: str | None = None
    born: tuple[date, date] | None = None  # the first and last day the birth date spans
    refused: str | None = None


def patient_histories(
    paths: Sequence[Path], limits: Limits, document_max: int, scratch: Path
) -> Iterator[PatientHistory]:
    """The patients of every file in ``paths``, file by file, in the readers' order.

    ``scratch`` is an empty folder the NDJSON reader indexes a file in. ConfigError for a
    file in a format validation does not read (HL7 v2, feature CSV)."""
    for number, path in enumerate(paths):
        work = scratch / str(number)
        work.mkdir()
        context = ReadContext(limits=limits, document_max=document_max, scratch=work)
        with path.open("rb") as stream:
            fmt = detect_format(stream, path.name, limits)
            if fmt not in READABLE:
                raise ConfigError(
                    f"{path.name}: validation reads FHIR NDJSON or JSON records, not {fmt.value}"
                )
            for item in read_items(stream, fmt, context):
                if isinstance(item, RecordItem):
                    yield _history(item)
                elif isinstance(item, BadItem):
                    keys = _keys(item.label, None)
                    yield PatientHistory(b"", RecordFormat.fhir_json, keys, refused=item.reason)


def _history(item: RecordItem) -> PatientHistory:
    patient = _patient(item.body)
    text = patient.get("birthDate") if patient else None
    first = parse_time(text)
    born = (first.date(), last_day(text, first.date())) if first and isinstance(text, str) else None
    gender = patient.get("gender") if patient else None
    return PatientHistory(
        body=item.body,
        format=item.format,
        keys=_keys(item.label, patient),
        gender=gender if isinstance(gender, str) else None,
        born=born,
    )


def _patient(body: bytes) -> Mapping[str, Any] | None:
    """The Patient resource of one patient's record (a resource or a Bundle), if any. The
    reader wrote or checked this JSON already; a body it cannot parse has no Patient."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    if document.get("resourceType") == "Patient":
        return document
    for entry in flat_entries(document) if document.get("resourceType") == "Bundle" else ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            return resource
    return None


def _keys(label: str, patient: Mapping[str, Any] | None) -> frozenset[str]:
    """Every name an outcomes file may give this patient."""
    keys = {label} if label else set()
    if label.startswith("Patient/"):
        keys.add(label.removeprefix("Patient/"))
    identifiers = patient.get("identifier") if patient else None
    for identifier in identifiers if isinstance(identifiers, list) else ():
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if isinstance(value, str) and value:
            keys.add(value)
    return frozenset(keys)
