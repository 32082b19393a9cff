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
from agent.batch.hl7_messages import clean_segment, envelope_closed, hl7_items
from agent.batch.items import BatchItem, ReadContext, UnreadableFile
from agent.batch.lines import EOL, read_lines
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
_OPENING = 64  # bytes: enough of a file's start to tell JSON from HL7
_TAIL = 4096  # bytes: a file's end read to find its end marker (a trailer segment is short)


def detect_format(stream: BinaryIO, name: str, limits: Limits) -> InputFormat:
    """The format of the file ``name`` open as ``stream`` (left at its start);
    ``UnreadableFile("unknown_format")`` when none fits. A first line longer than an NDJSON
    line may be (``limits.http_body_max``) can only be one JSON document or HL7 whose first
    message is too large: its opening bytes tell which, so a one-line document gets the
    single-document limit (``document_max``), not the line limit."""
    suffix = Path(name).suffix.lower()
    known = _BY_SUFFIX.get(suffix)
    if known is not None:
        return known
    first: list[bytes | None] = []
    for _, line, _ in read_lines(stream, limits.http_body_max):
        if line is None or clean_segment(line):
            first.append(clean_segment(line) if line is not None else None)
        if len(first) == 2:
            break
    stream.seek(0)
    if not first:
        raise UnreadableFile("unknown_format", "the file is empty")
    head = first[0]
    if head is None:
        head = clean_segment(stream.read(_OPENING).lstrip())
        stream.seek(0)
        if head.startswith((b"{", b"[")):
            return InputFormat.fhir_json
    if _HL7_START.match(head):
        return InputFormat.hl7v2
    if head.startswith(b"{"):
        several = len(first) == 2 and _is_json_object(head)
        return InputFormat.ndjson if several else InputFormat.fhir_json
    if suffix == ".json" or head.startswith(b"["):
        return InputFormat.fhir_json
    if b"," in head and first[0] is not None:
        return InputFormat.features_csv
    raise UnreadableFile("unknown_format", "the file is not NDJSON, FHIR JSON, HL7 v2 or CSV")


def end_seen(stream: BinaryIO, fmt: InputFormat, limits: Limits) -> bool:
    """Whether the file open as ``stream`` shows the end its format promises: a JSON
    document its closing bracket, an HL7 batch that opened with ``FHS``/``BHS`` its
    ``FTS``/``BTS``. NDJSON, CSV and bare HL7 messages have no end marker (True). Reads
    the head and the tail only; leaves ``stream`` at its start."""
    size = os.fstat(stream.fileno()).st_size
    tail = os.pread(stream.fileno(), _TAIL, max(0, size - _TAIL))
    if fmt is InputFormat.fhir_json:
        return tail.rstrip().endswith((b"}", b"]"))
    if fmt is not InputFormat.hl7v2:
        return True
    first = next(
        (
            s
            for _, line, _ in read_lines(stream, limits.hl7_message_max)
            if line is not None and (s := clean_segment(line))
        ),
        b"",
    )
    stream.seek(0)
    lines = [clean_segment(line) for line in EOL.split(tail)]
    whole = lines[1:] if size > _TAIL else lines  # the first may be a cut-off segment
    last = next((line for line in reversed(whole) if line), b"")
    return envelope_closed(first, last)


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
