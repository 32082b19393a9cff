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
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from agent.batch.items import (
    BadItem,
    BatchItem,
    ReadContext,
    ReadStopped,
    RecordItem,
    UnreadableFile,
)
from agent.batch.lines import BOM, read_lines
from agent.limits import Limits
from agent.types import RecordFormat

GROUPED_TYPES = frozenset({"Observation", "Encounter"})  # joined to a patient by subject
NO_SUBJECT = "!no_subject"  # key of a grouped resource that names no patient
INDEX_NAME = "ndjson-index.sqlite"
_INDEX_SCHEMA = """
CREATE TABLE rows (
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, line INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, entry INTEGER NOT NULL,
    reason TEXT, detail TEXT);
CREATE INDEX rows_by_key ON rows (key, seq);
CREATE TABLE complete (size INTEGER, mtime_ns INTEGER);
"""
_INSERT_BATCH = 10_000  # index rows per executemany
_BUNDLE_DEPTH_MAX = 2  # Bundles inside a Bundle opened this deep (the pipeline reads 3 levels)


def reference_key(reference: str) -> str:
    """``https://x/fhir/Patient/7/_history/2`` -> ``Patient/7``; other strings unchanged."""
    head = reference.split("/_history/", 1)[0]
    cut = head.rfind("Patient/")
    return head[cut:] if cut > 0 and head[cut - 1] == "/" else head


def resource_key(
    resource: Mapping[str, Any], aliases: Mapping[str, str], full_url: str | None = None
) -> str | None:
    """The patient ``resource`` belongs to; ``NO_SUBJECT`` for an Observation or Encounter
    that names none; None for types that are no part of a patient record."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        rid = resource.get("id")
        return f"Patient/{rid}" if isinstance(rid, str) and rid else full_url or NO_SUBJECT
    if kind not in GROUPED_TYPES:
        return None
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str) or not reference:
        return NO_SUBJECT
    return (
        aliases.get(reference) or aliases.get(reference_key(reference)) or reference_key(reference)
    )


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
        resource = entry.get("resource") if isinstance(entry, dict) else None
        keys.append(resource_key(resource, aliases) if isinstance(resource, dict) else None)
    patients = {k for k in keys if k is not None and k != NO_SUBJECT}
    if len(patients) == 1:
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
            "SELECT key, COUNT(*), MIN(line), MAX(line), MIN(offset) FROM rows"
            " GROUP BY key ORDER BY MIN(seq)"
        )
        for key, count, first, last, offset in groups:
            stream.seek(offset)  # so the caller's progress (stream.tell()) follows the groups
            lines = (first, last)
            if key.startswith("!"):
                reason, detail = index.execute(
                    "SELECT reason, detail FROM rows WHERE key = ?", (key,)
                ).fetchone()
                yield BadItem(lines, reason, detail)
            elif count > limits.records_per_request_max:
                detail = "more resources for one patient than allowed"
                yield BadItem(lines, "too_large", detail, key)
            else:
                rows = index.execute(
                    "SELECT line, offset, length, entry FROM rows WHERE key = ? ORDER BY seq",
                    (key,),
                )
                yield RecordItem(
                    lines, _collection(_entries(stream, rows)), RecordFormat.fhir_json, key
                )


def _entries(stream: BinaryIO, rows: Any) -> list[bytes]:
    """The Bundle entries of one patient, read back by offset (a Bundle line parsed once)."""
    entries: list[bytes] = []
    cached: tuple[int, Any] = (0, None)
    for line, offset, length, entry in rows:
        raw = os.pread(stream.fileno(), length, offset).strip()
        if entry < 0:
            entries.append(b'{"resource":' + raw + b"}")
            continue
        if cached[0] != line:
            cached = (line, flat_entries(json.loads(raw)))
        entries.append(_compact(cached[1][entry]))
    return entries


def _open_index(stream: BinaryIO, context: ReadContext) -> sqlite3.Connection:
    """The file's index: reused when a previous run completed it for this very file (same
    size and mtime), else (re)built."""
    path = context.scratch / INDEX_NAME
    stat = os.fstat(stream.fileno())
    fingerprint = (stat.st_size, stat.st_mtime_ns)
    if path.exists():
        index = sqlite3.connect(path)
        try:
            if index.execute("SELECT size, mtime_ns FROM complete").fetchall() == [fingerprint]:
                return index
        except sqlite3.DatabaseError:
            pass
        index.close()
        path.unlink()
    index = sqlite3.connect(path)
    try:
        with index:  # one transaction: the index is complete or absent
            index.executescript(_INDEX_SCHEMA)
            batch: list[tuple[Any, ...]] = []
            for row in _index_rows(stream, context.limits):
                batch.append(row)
                if len(batch) >= _INSERT_BATCH:
                    index.executemany("INSERT INTO rows VALUES (NULL,?,?,?,?,?,?,?)", batch)
                    batch.clear()
                    if context.stop():
                        raise ReadStopped
            index.executemany("INSERT INTO rows VALUES (NULL,?,?,?,?,?,?,?)", batch)
            index.execute("INSERT INTO complete VALUES (?, ?)", fingerprint)
    except BaseException:
        index.close()
        raise
    return index


def _index_rows(stream: BinaryIO, limits: Limits) -> Iterator[tuple[Any, ...]]:
    """``(key, line, offset, length, entry, reason, detail)`` per resource to group, and one
    row keyed ``!<line>`` per unreadable line."""
    for number, line, offset in read_lines(stream, limits.http_body_max):
        bad = f"!{number}"
        if line is None:
            yield bad, number, offset, 0, -1, "too_large", "line longer than the record size limit"
            continue
        if number == 1 and line.startswith(BOM):  # the offsets then point past it
            line, offset = line[len(BOM) :], offset + len(BOM)
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except UnicodeDecodeError:
            yield bad, number, offset, 0, -1, "encoding", "line is not UTF-8"
            continue
        except json.JSONDecodeError as exc:
            yield (
                bad,
                number,
                offset,
                0,
                -1,
                "bad_json",
                f"invalid JSON at column {exc.colno}: {exc.msg}",
            )
            continue
        except RecursionError:
            yield bad, number, offset, 0, -1, "bad_json", "JSON nested too deeply"
            continue
        if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
            yield bad, number, offset, 0, -1, "not_fhir", "line is not a FHIR resource"
            continue
        if document["resourceType"] == "Bundle":
            keys = _bundle_keys(flat_entries(document))
            if NO_SUBJECT in keys:
                detail = "an Observation or Encounter names no subject among several patients"
                yield bad, number, offset, 0, -1, "no_subject", detail
                continue
            for entry, key in enumerate(keys):
                if key is not None:
                    yield key, number, offset, len(line), entry, None, None
            continue
        key = resource_key(document, {})
        if key == NO_SUBJECT:
            detail = f"{document['resourceType']} names no subject"
            yield bad, number, offset, 0, -1, "no_subject", detail
        elif key is not None:
            yield key, number, offset, len(line), -1, None, None


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
    if len(groups) == 1 and NO_SUBJECT not in groups:
        yield RecordItem(None, data, RecordFormat.fhir_json, next(iter(groups)))
        return
    for key, own in groups.items():
        if key == NO_SUBJECT:
            detail = (
                f"{len(own)} Observation/Encounter entries name no subject among several patients"
            )
            yield BadItem(None, "no_subject", detail)
        else:
            yield RecordItem(None, _collection(own), RecordFormat.fhir_json, key)
