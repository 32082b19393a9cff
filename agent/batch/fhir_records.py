"""FHIR batch inputs cut into one record per patient: NDJSON and a single-document file.

One record = one patient, so a bad patient fails only itself, and the pipeline sees for each
patient exactly what the HTTP path would group for it (``agent.records.grouping``): the
Patient, and the Observations and Encounters whose ``subject`` references it (``Patient/id``,
an absolute URL ending so, or a Bundle ``fullUrl``). Other resource types are ignored, as
the pipeline ignores them. An Observation or Encounter without a subject joins the only
patient of its Bundle; where that is ambiguous it is a bad record (``no_subject``).

NDJSON lines may be resources or Bundles in any order (a bulk export lists all Patients,
then all Observations). To group them with flat memory the file is read twice: pass one
writes an index (patient key, line, byte offset, Bundle entry) to SQLite in the job's work
folder, pass two reads each patient's lines back by offset, patients in order of first
appearance. The order depends only on the file, so a resumed job sees the same records.

The usual export has one Bundle per patient per line. Such a line, when everything in it
that carries data is that one patient's and no other line names the patient, is one index
row and is handed to the pipeline unchanged (as a one-patient document is): read back with
one ``pread``, never parsed again or re-serialized here. Only a patient spread over several
lines, or sharing a Bundle with others, is rebuilt as a collection Bundle of its entries.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, TypedDict

import orjson

from agent.batch.items import (
    BadItem,
    BatchItem,
    ReadContext,
    ReadStopped,
    RecordItem,
    UnreadableFile,
)
from agent.batch.lines import BOM, read_lines
from agent.errors import NoPatient
from agent.limits import Limits
from agent.records.grouping import NO_SUBJECT, entry_resource, reference_key, resource_key
from agent.types import RecordFormat

INDEX_NAME = "ndjson-index.3.sqlite"  # numbered by layout, as it is named in docs/
_INDEX_SCHEMA = """
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE rows (
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, line INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, entry INTEGER NOT NULL,
    resources INTEGER NOT NULL, reason TEXT, detail TEXT);
CREATE INDEX rows_by_key ON rows (key, seq);
"""
_INSERT = "INSERT INTO rows VALUES (NULL,?,?,?,?,?,?,?,?)"
_INSERT_BATCH = 10_000  # index rows per executemany
# ``entry`` of an index row: an entry's index in the line's ``flat_entries``, or
_RESOURCE = -1  # the line is one resource (or cannot be read: a ``!`` key)
_WHOLE = -2  # the line is a Bundle whose data is all this patient's (``resources`` of them)
_BUNDLE_DEPTH_MAX = 2  # Bundles inside a Bundle opened this deep (the pipeline reads 3 levels)


def _bundle_keys(entries: list[Any]) -> list[str | None]:
    """The patient key of each entry of one Bundle; subject-less ones join its only patient."""
    aliases: dict[str, str] = {}
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            key = resource_key(resource, {}, full_url if isinstance(full_url, str) else None)
            if isinstance(full_url, str) and key is not None:
                aliases[full_url] = key
                aliases[reference_key(full_url)] = key
    keys: list[str | None] = []
    for entry in entries:
        resource = entry_resource(entry)
        keys.append(resource_key(resource, aliases) if isinstance(resource, dict) else None)
    patients = set(keys) - {None, NO_SUBJECT}
    if len(patients) == 1 and NO_SUBJECT in keys:
        only = patients.pop()
        keys = [only if k == NO_SUBJECT else k for k in keys]
    return keys


def flat_entries(bundle: Mapping[str, Any], depth: int = 0) -> list[Any]:
    """The entries of ``bundle`` with nested Bundles opened (as deep as the records part
    reads them), in document order."""
    entries = bundle.get("entry")
    flat: list[Any] = []
    for entry in entries if isinstance(entries, list) else ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Bundle"
            and depth < _BUNDLE_DEPTH_MAX
        ):
            flat.extend(flat_entries(resource, depth + 1))
        else:
            flat.append(entry)
    return flat


def _loads(line: bytes) -> Any:
    """A line as the stdlib reads it (its errors, its leniency: the pipeline is the judge of
    what is valid), at orjson's speed for the lines orjson reads."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


class _KeyedResource(TypedDict, total=False):
    """The members of a resource that decide its patient (``resource_key``), and the
    entries of a Bundle (``flat_entries``)."""

    resourceType: Any
    id: Any
    subject: _Reference
    entry: list[_KeyedEntry]


class _Reference(TypedDict, total=False):
    reference: Any


class _KeyedEntry(TypedDict, total=False):
    """The members of a Bundle entry that decide its patient (``_bundle_keys``)."""

    resource: _KeyedResource
    fullUrl: Any
    request: _Request


class _Request(TypedDict, total=False):
    method: Any


@functools.cache
def _keyed_reader() -> tuple[Callable[[bytes], Any], type[Exception]]:
    """msgspec's reader of ``_KeyedResource`` and its error, imported on first use: the
    daemon imports this module with the drop folder, enabled or not."""
    import msgspec

    return msgspec.json.Decoder(_KeyedResource).decode, msgspec.DecodeError


def _key_members(line: bytes) -> Any:
    """What ``_line_keys`` reads of a line: the members that decide its patients, skipping
    the rest (half orjson's cost on a 25 kB Bundle line, where building every Observation's
    dicts only to throw them away was most of the index pass). Whatever this decoder does
    not read exactly as ``_loads`` would (bytes that are not UTF-8, which it does not check
    in the members it skips; a member of another shape than declared; anything it refuses)
    is read whole by ``_loads``, which then decides."""
    if line.isascii() or _is_utf8(line):
        decode, refused = _keyed_reader()
        try:
            return decode(line)
        except (refused, RecursionError):
            pass
    return _loads(line)


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode()
    except UnicodeDecodeError:
        return False
    return True


def _collection(entries: list[bytes]) -> bytes:
    """A collection Bundle around already-serialized entries."""
    return b'{"resourceType":"Bundle","type":"collection","entry":[' + b",".join(entries) + b"]}"


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# --- NDJSON -------------------------------------------------------------------------------
def ndjson_items(stream: BinaryIO, context: ReadContext) -> Iterator[BatchItem]:
    """One record per patient over the whole file (two passes, see the module docstring);
    an unreadable line is a record of its own."""
    limits = context.limits
    with contextlib.closing(_open_index(stream, context)) as index:
        groups = index.execute(
            "SELECT key, SUM(resources), COUNT(*), MIN(line), MAX(line), MIN(offset),"
            " MIN(entry), MIN(length), MIN(reason), MIN(detail)"
            " FROM rows GROUP BY key ORDER BY MIN(seq)"
        )
        empty = True
        for key, resources, count, first, last, offset, entry, length, reason, detail in groups:
            empty = False
            stream.seek(offset)  # so the caller's progress (stream.tell()) follows the groups
            lines = (first, last)
            if key.startswith("!"):  # one row: the line that cannot be read
                yield BadItem(lines, reason, detail)
            elif resources > limits.records_per_request_max:
                detail = "more resources for one patient than allowed"
                yield BadItem(lines, "too_large", detail, key)
            elif count == 1 and entry == _WHOLE:
                body = os.pread(stream.fileno(), length, offset).strip()
                yield RecordItem(lines, body, RecordFormat.fhir_json, key)
            else:
                rows = index.execute(
                    "SELECT line, offset, length, entry FROM rows WHERE key = ? ORDER BY seq",
                    (key,),
                )
                yield RecordItem(
                    lines, _collection(_entries(stream, rows)), RecordFormat.fhir_json, key
                )
        if empty:  # nothing in the file belongs to a patient: the same answer as over HTTP
            yield BadItem(None, NoPatient.reason, "the file holds no patient to score")


def _entries(stream: BinaryIO, rows: Any) -> list[bytes]:
    """The Bundle entries of one patient, read back by offset (a Bundle line parsed once)."""
    entries: list[bytes] = []
    cached: tuple[int, Any] = (0, None)
    for line, offset, length, entry in rows:
        raw = os.pread(stream.fileno(), length, offset).strip()
        if entry == _RESOURCE:
            entries.append(b'{"resource":' + raw + b"}")
            continue
        if cached[0] != line:
            cached = (line, flat_entries(_loads(raw)))
        flat = cached[1]
        if entry == _WHOLE:  # every entry with data is this patient's
            keys = _bundle_keys(flat)
            entries.extend(_compact(e) for e, k in zip(flat, keys, strict=True) if k is not None)
        else:
            entries.append(_compact(flat[entry]))
    return entries


def _open_index(stream: BinaryIO, context: ReadContext) -> sqlite3.Connection:
    """The file's index, built afresh by every run: it is never reused after a crash or a
    stop, so it needs no durability (no rollback journal, no fsync: the few milliseconds
    of a scratch file's fsyncs count against a small file), and a torn index can never be
    read. Rebuilding costs one read of the file, only on a resume."""
    path = context.scratch / INDEX_NAME
    path.unlink(missing_ok=True)
    index = sqlite3.connect(path)
    try:
        index.executescript(_INDEX_SCHEMA)
        with index:
            batch: list[tuple[Any, ...]] = []
            for row in _index_rows(stream, context.limits):
                batch.append(row)
                if len(batch) >= _INSERT_BATCH:
                    index.executemany(_INSERT, batch)
                    batch.clear()
                    if context.stop():
                        raise ReadStopped
            index.executemany(_INSERT, batch)
    except BaseException:
        index.close()
        raise
    return index


def _index_rows(stream: BinaryIO, limits: Limits) -> Iterator[tuple[Any, ...]]:
    """``(key, line, offset, length, entry, resources, reason, detail)`` per resource to
    group (one row for a Bundle line that is all one patient's), and one row keyed
    ``!<line>`` per unreadable line."""
    for number, line, offset in read_lines(stream, limits.http_body_max):
        if line is not None and number == 1 and line.startswith(BOM):  # offsets past it
            line, offset = line[len(BOM) :], offset + len(BOM)
        if line is not None and not line.strip():
            continue
        try:
            if line is None:
                raise _BadLine("too_large", "line longer than the record size limit")
            for key, entry, resources in _line_keys(line):
                yield key, number, offset, len(line), entry, resources, None, None
        except _BadLine as exc:
            yield f"!{number}", number, offset, 0, _RESOURCE, 1, exc.reason, exc.detail


class _BadLine(Exception):
    """An NDJSON line that is a failing record of its own (PHI-free reason and detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _line_keys(line: bytes) -> list[tuple[str, int, int]]:
    """``(patient key, entry, resources)`` of each index row of one non-blank line;
    ``_BadLine`` when the line is a record that fails."""
    try:
        document = _key_members(line)
    except UnicodeDecodeError:
        raise _BadLine("encoding", "line is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _BadLine("bad_json", f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise _BadLine("bad_json", "JSON nested too deeply") from None
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise _BadLine("not_fhir", "line is not a FHIR resource")
    if document["resourceType"] != "Bundle":
        key = resource_key(document, {})
        if key == NO_SUBJECT:
            raise _BadLine("no_subject", f"{document['resourceType']} names no subject")
        return [] if key is None else [(key, _RESOURCE, 1)]
    entries = flat_entries(document)
    keys = _bundle_keys(entries)
    if NO_SUBJECT in keys:
        detail = "an Observation or Encounter names no subject among several patients"
        raise _BadLine("no_subject", detail)
    patients = {k for k in keys if k is not None}
    if len(patients) == 1 and (
        None not in keys
        or all(entry_resource(e) is None for e, k in zip(entries, keys, strict=True) if k is None)
    ):  # nothing else with data in it: the line is handed over as it is
        return [(patients.pop(), _WHOLE, len(keys) - keys.count(None))]
    return [(key, entry, 1) for entry, key in enumerate(keys) if key is not None]


# --- one JSON document --------------------------------------------------------------------
def document_items(data: bytes) -> Iterator[BatchItem]:
    """Records of a file holding one JSON document (a resource or a Bundle), per patient."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UnreadableFile("bad_json", "the file is not one valid JSON document") from exc
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise UnreadableFile("not_fhir", "the JSON document is not a FHIR resource")
    if document["resourceType"] != "Bundle":
        yield RecordItem(None, data, RecordFormat.fhir_json, resource_key(document, {}) or "")
        return
    entries = flat_entries(document)
    keys = _bundle_keys(entries)
    groups: dict[str, list[bytes]] = {}
    for entry, key in zip(entries, keys, strict=True):
        if key is not None:
            groups.setdefault(key, []).append(_compact(entry))
    if not groups or (len(groups) == 1 and NO_SUBJECT not in groups):
        # one patient, or none: the data plane answers for the whole document (no_patient)
        yield RecordItem(None, data, RecordFormat.fhir_json, next(iter(groups), ""))
        return
    for key, own in groups.items():
        if key == NO_SUBJECT:
            detail = (
                f"{len(own)} Observation/Encounter entries name no subject among several patients"
            )
            yield BadItem(None, "no_subject", detail)
        else:
            yield RecordItem(None, _collection(own), RecordFormat.fhir_json, key)
