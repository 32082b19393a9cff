"""The NDJSON index reads only the members that decide a line's patients (msgspec), and must
decide exactly what reading the whole line with the stdlib's rules decides: the same index
rows for every line, and the same failing reason and detail for every bad one."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.batch import fhir_records

MARK = "\u00a7"  # in strings, where a raw byte sequence goes after serializing
text = st.text(alphabet=st.sampled_from(["a", "\u00e9", MARK, MARK]), max_size=3)
references = st.sampled_from(
    [
        "Patient/a",
        "Patient/b",
        "urn:uuid:1",
        "urn:uuid:2",
        "https://x/fhir/Patient/a/_history/3",
        "",
        "Patient/\u00e9",
        f"Patient/{MARK}",
    ]
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
odd = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(text, scalars))


def _resource(kind: str, pid: Any, subject: Any, extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": kind, "note": extra}
    if pid is not None:
        resource["id"] = pid
    if subject is not None:
        resource["subject"] = subject
    return resource


resources = st.builds(
    _resource,
    st.sampled_from(["Patient", "Observation", "Encounter", "Medication"]),
    st.one_of(st.none(), st.sampled_from(["a", "b", "\u00e9", MARK]), odd),
    st.one_of(st.none(), st.fixed_dictionaries({"reference": references}), odd),
    odd,
)


def _entry(resource: Any, full_url: Any, method: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource}
    if full_url is not None:
        entry["fullUrl"] = full_url
    if method is not None:
        entry["request"] = {"method": method, "url": "x"}
    return entry


entries = st.builds(
    _entry,
    st.one_of(resources, odd),
    st.one_of(st.none(), references, odd),
    st.one_of(st.none(), st.sampled_from(["GET", "delete", "POST", 3])),
)
bundles = st.recursive(
    st.builds(
        lambda found: {"resourceType": "Bundle", "entry": found},
        st.lists(st.one_of(entries, odd), max_size=5),
    ),
    lambda inner: st.builds(
        lambda bundle, more: {"resourceType": "Bundle", "entry": [{"resource": bundle}, *more]},
        inner,
        st.lists(entries, max_size=3),
    ),
    max_leaves=4,
)
documents = st.one_of(bundles, resources, odd)


def _mutated(data: bytes, marked: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    """``data`` with ``marked`` in its strings' marks and a few bytes replaced, deleted or
    inserted: broken JSON, bytes that are not UTF-8, escapes and surrogates."""
    data = data.replace(MARK.encode(), marked)
    for where, piece in edits:
        at = where % (len(data) + 1)
        data = data[:at] + piece + data[at + len(piece) % 2 :]
    return data


pieces = st.sampled_from([b"", b'"', b"\\", b"\xff", b"\\ud800", b"NaN", b"1e999", b",", b"}"])
in_strings = st.sampled_from(
    [
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\\ud800",
        b"\\q",
        b"\x01",
        b"\xc3\xa9",
    ]
)


def _decision(line: bytes, read: Callable[[bytes], Any]) -> object:
    """``_line_keys`` of ``line`` with ``read`` as its decoder: its rows or its failure."""
    with mock.patch.object(fhir_records, "_key_members", read):
        try:
            return fhir_records._line_keys(line)
        except fhir_records._BadLine as exc:
            return (exc.reason, exc.detail)


@settings(max_examples=500)
@given(documents, in_strings, st.lists(st.tuples(st.integers(0, 10_000), pieces), max_size=2))
def test_the_index_decides_as_the_whole_line_would(
    document: Any, marked: bytes, edits: list[tuple[int, bytes]]
) -> None:
    line = _mutated(json.dumps(document, ensure_ascii=False).encode(), marked, edits)
    if not line.strip():
        return
    assert _decision(line, fhir_records._key_members) == _decision(line, fhir_records._loads)


def test_deep_nesting_and_odd_encodings_decide_as_the_whole_line_would() -> None:
    deep = b'{"resourceType":"Patient","id":"a","x":' + b"[" * 990 + b"]" * 990 + b"}"
    for line in (
        deep,
        b'{"resourceType":"Patient","id":"\xed\xa0\x80"}',  # an encoded surrogate
        b'{"resourceType":"Patient","id":"a","x":"\xff"}',
        b'\xef\xbb\xbf{"resourceType":"Patient","id":"a"}',  # a BOM past the first line
        '{"resourceType":"Patient","id":"a"}'.encode("utf-16"),
        b'{"resourceType":"Patient","id":"a","id":"b"}',
        b'{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"a"}}],'
        b'"entry":5}',
    ):
        assert _decision(line, fhir_records._key_members) == _decision(line, fhir_records._loads)
