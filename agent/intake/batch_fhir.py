"""FHIR batch inputs cut into one record per patient: NDJSON (streamed) and a Bundle file.

One record = one patient, so one bad patient fails only itself and the pipeline sees one
subject per request. NDJSON lines are either whole Bundles (one patient per line) or single
resources grouped by subject: consecutive lines that refer to the same patient (``Patient``
by id, anything else by ``subject`` or ``patient`` reference) form one record, as a bulk
export sorted by patient produces. A line without a subject joins the record it sits in.
A Bundle file holding several patients is split the same way; resources without a subject
(an Organization, a Practitioner) go to every patient's record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from agent.intake.batch_items import BadItem, BatchItem, RecordItem, UnreadableFile
from agent.intake.batch_lines import read_lines
from agent.limits import Limits
from agent.types import RecordFormat


def reference_key(reference: str) -> str:
    """``http://x/fhir/Patient/7/_history/2`` and ``Patient/7`` name the same patient."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else reference


def subject_key(resource: Mapping[str, Any]) -> str | None:
    """The patient a resource is about, or None when it names none."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return f"Patient/{rid}" if isinstance(rid, str) and rid else None
    for name in ("subject", "patient"):
        ref = resource.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return reference_key(ref["reference"])
    return None


def _collection(entries: list[bytes]) -> bytes:
    """A collection Bundle around already-serialized entries (no re-encoding of the data)."""
    return b'{"resourceType":"Bundle","type":"collection","entry":[' + b",".join(entries) + b"]}"


@dataclass
class _Group:
    """Consecutive NDJSON lines about one patient, not yet emitted."""

    first: int
    key: str | None
    entries: list[bytes] = field(default_factory=list)
    last: int = 0
    overflow: bool = False
    warnings: list[str] = field(default_factory=list)

    def item(self) -> BatchItem:
        lines = (self.first, self.last)
        label = self.key or ""
        if self.overflow:
            return BadItem(lines, "too_large", "more resources for one patient than allowed", label)
        return RecordItem(
            lines, _collection(self.entries), RecordFormat.fhir_json, label, tuple(self.warnings)
        )


def ndjson_items(stream: BinaryIO, limits: Limits) -> Iterator[BatchItem]:
    """Stream NDJSON records with memory bounded by one patient's resources."""
    group: _Group | None = None
    for number, line in read_lines(stream, limits.http_body_max):
        parsed = _parse_line(number, line)
        if isinstance(parsed, BadItem):
            if group is not None:
                group.warnings.append(f"line {number} near this record unreadable: {parsed.reason}")
            yield parsed
            continue
        if parsed is None:
            continue
        resource, raw = parsed
        if resource.get("resourceType") == "Bundle":
            if group is not None:
                yield group.item()
                group = None
            yield RecordItem((number, number), raw, RecordFormat.fhir_json, _bundle_label(resource))
            continue
        key = subject_key(resource)
        if group is not None and key is not None and group.key not in (None, key):
            yield group.item()
            group = None
        if group is None:
            group = _Group(first=number, key=key)
        group.key = group.key or key
        group.last = number
        if len(group.entries) >= limits.records_per_request_max:
            group.overflow = True
            group.entries.clear()
        if not group.overflow:
            group.entries.append(b'{"resource":' + raw + b"}")
    if group is not None:
        yield group.item()


def _parse_line(number: int, line: bytes | None) -> tuple[dict[str, Any], bytes] | BadItem | None:
    """A line's resource and its raw bytes; None for a blank line."""
    lines = (number, number)
    if line is None:
        return BadItem(lines, "too_large", "line longer than the record size limit")
    raw = line.strip()
    if not raw:
        return None
    try:
        resource = json.loads(raw)
    except UnicodeDecodeError:
        return BadItem(lines, "encoding", "line is not UTF-8")
    except json.JSONDecodeError as exc:
        return BadItem(lines, "bad_json", f"invalid JSON at column {exc.colno}: {exc.msg}")
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return BadItem(lines, "not_fhir", "line is not a FHIR resource (no resourceType)")
    return resource, raw


def _bundle_label(bundle: Mapping[str, Any]) -> str:
    """The patient a Bundle is about, if it holds exactly one Patient with an id."""
    keys: set[str] = set()
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            keys.add(subject_key(resource) or "")
    return keys.pop() if len(keys) == 1 else ""


def bundle_file_items(data: bytes) -> Iterator[BatchItem]:
    """Records of a file that holds one JSON document: a resource, a Bundle of one or
    several patients, or a Bundle of Bundles (each inner Bundle is one record)."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableFile("bad_json", "the file is not one valid JSON document") from exc
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise UnreadableFile("not_fhir", "the JSON document is not a FHIR resource")
    if document["resourceType"] != "Bundle":
        yield RecordItem(None, data, RecordFormat.fhir_json, subject_key(document) or "")
        return
    entries = [e for e in document.get("entry") or () if isinstance(e, dict)]
    inner = [
        e["resource"]
        for e in entries
        if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Bundle"
    ]
    if entries and len(inner) == len(entries):
        for bundle in inner:
            raw = json.dumps(bundle, separators=(",", ":")).encode()
            yield RecordItem(None, raw, RecordFormat.fhir_json, _bundle_label(bundle))
        return
    groups = _split_by_patient(entries)
    if len(groups) <= 1:
        yield RecordItem(None, data, RecordFormat.fhir_json, _bundle_label(document))
        return
    shared = groups.pop(None, [])
    for key, own in groups.items():
        raw_entries = [json.dumps(e, separators=(",", ":")).encode() for e in own + shared]
        yield RecordItem(None, _collection(raw_entries), RecordFormat.fhir_json, key or "")


def _split_by_patient(entries: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """Entries by patient key, in order of first appearance; None holds subject-less ones.
    ``urn:uuid:`` references resolve through the Patient entries' ``fullUrl``."""
    aliases: dict[str, str] = {}
    for entry in entries:
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        is_patient = isinstance(resource, dict) and resource.get("resourceType") == "Patient"
        if is_patient and isinstance(resource, dict) and isinstance(full_url, str):
            alias = subject_key(resource) or full_url
            aliases[full_url] = alias
            aliases[reference_key(full_url)] = alias
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for entry in entries:
        resource = entry.get("resource")
        key = subject_key(resource) if isinstance(resource, dict) else None
        if key is None and isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            key = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        if key is not None:
            key = aliases.get(key, key)
        groups.setdefault(key, []).append(entry)
    return groups
