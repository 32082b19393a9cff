"""Which batch format a file is, and the reader for it (looked up by name in one table).

Detection, in order: the extension when it is unambiguous (``.ndjson``/``.jsonl``,
``.csv``, ``.hl7``/``.hl7v2``); otherwise the content: a first segment ``MSH|``, ``FHS|``
or ``BHS|`` is HL7 v2; a first line that is a whole JSON object followed by another
non-blank line is NDJSON; any other JSON is one document (a resource or a Bundle); a first
line with commas is a feature CSV. Anything else cannot be read and goes to ``failed/``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from agent.batch.csv_rows import csv_items
from agent.batch.fhir_records import document_items, ndjson_items
from agent.batch.hl7_messages import clean_segment, hl7_items
from agent.batch.items import BatchItem, ReadContext, UnreadableFile
from agent.batch.lines import read_lines
from agent.limits import Limits


class InputFormat(StrEnum):
    ndjson = "ndjson"  # FHIR NDJSON: a Bundle per line, or resources grouped by subject
    fhir_json = "fhir_json"  # one JSON document: a resource or a Bundle
    hl7v2 = "hl7v2"  # one or more HL7 v2 messages, with or without FHS/BHS envelope
    features_csv = "features_csv"  # header of feature names, one row of numbers per record


_BY_SUFFIX = {
    ".ndjson": InputFormat.ndjson,
    ".jsonl": InputFormat.ndjson,
    ".csv": InputFormat.features_csv,
    ".hl7": InputFormat.hl7v2,
    ".hl7v2": InputFormat.hl7v2,
}
_HL7_START = re.compile(rb"(MSH|FHS|BHS)[^A-Za-z0-9\s]")


def detect_format(path: Path, limits: Limits) -> InputFormat:
    """The format of ``path``; ``UnreadableFile("unknown_format")`` when none fits."""
    known = _BY_SUFFIX.get(path.suffix.lower())
    if known is not None:
        return known
    with open(path, "rb") as stream:
        first: list[bytes | None] = []
        for _, line, _ in read_lines(stream, limits.http_body_max):
            if line is None or clean_segment(line):
                first.append(clean_segment(line) if line is not None else None)
            if len(first) == 2:
                break
    head = first[0] if first else None
    if head is None:
        raise UnreadableFile("unknown_format", "the file is empty or its first line too long")
    if _HL7_START.match(head):
        return InputFormat.hl7v2
    if head.startswith(b"{"):
        several = len(first) == 2 and _is_json_object(head)
        return InputFormat.ndjson if several else InputFormat.fhir_json
    if path.suffix.lower() == ".json" or head.startswith(b"["):
        return InputFormat.fhir_json
    if b"," in head:
        return InputFormat.features_csv
    raise UnreadableFile("unknown_format", "the file is not NDJSON, FHIR JSON, HL7 v2 or CSV")


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


Reader = Callable[[BinaryIO, ReadContext], Iterator[BatchItem]]


def _read_document(stream: BinaryIO, context: ReadContext) -> Iterator[BatchItem]:
    if os.fstat(stream.fileno()).st_size > context.document_max:
        raise UnreadableFile("too_large", "a single-document JSON file larger than allowed")
    return document_items(stream.read())


READERS: dict[InputFormat, Reader] = {
    InputFormat.ndjson: ndjson_items,
    InputFormat.fhir_json: _read_document,
    InputFormat.hl7v2: lambda stream, context: hl7_items(stream, context.limits),
    InputFormat.features_csv: lambda stream, _: csv_items(stream),
}


def read_items(stream: BinaryIO, fmt: InputFormat, context: ReadContext) -> Iterator[BatchItem]:
    """The records of ``stream`` in file order (NDJSON: in order of each patient's first
    line). Memory stays flat, except for the single-document JSON format, which is read
    whole (at most ``context.document_max`` bytes). Raises ``UnreadableFile`` (possibly on
    first iteration) when the file as a whole cannot be read, ``ReadStopped`` when
    ``context.stop()`` interrupted the NDJSON index."""
    return READERS[fmt](stream, context)
