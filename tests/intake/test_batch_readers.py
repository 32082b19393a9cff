"""The batch readers at their edges: line splitting, size limits, ambiguous subjects, an
interrupted NDJSON index, and flat memory on a file much larger than what is kept."""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.batch import lines as batch_lines
from agent.batch.config import OutputKind
from agent.batch.engine import BatchEngine, BatchSettings
from agent.batch.fhir_records import INDEX_NAME, document_items, ndjson_items
from agent.batch.formats import InputFormat, detect_format
from agent.batch.hl7_messages import hl7_items
from agent.batch.items import BadItem, ReadContext, RecordItem
from agent.batch.lines import BOM, read_lines
from agent.limits import Limits
from agent.types import IntakePath, RecordFormat
from tests.intake.dropfolder_support import RecordScorer

pieces = st.lists(
    st.tuples(
        st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        st.sampled_from([b"\n", b"\r", b"\r\n"]),
    ),
    max_size=30,
)


@given(pieces, st.binary(max_size=5).map(lambda b: b.strip(b"\r\n")), st.integers(1, 9))
def test_read_lines_splits_and_locates_every_line(
    lines: list[tuple[bytes, bytes]], tail: bytes, chunk: int
) -> None:
    data = b"".join(text + end for text, end in lines) + tail
    original, batch_lines._CHUNK = batch_lines._CHUNK, chunk  # chunk edges everywhere
    try:
        found = list(read_lines(io.BytesIO(data), max_len=1000))
    finally:
        batch_lines._CHUNK = original
    expected = re.split(rb"\r\n|\r|\n", data)
    if expected[-1] == b"":
        expected.pop()
    assert [line for _, line, _ in found] == expected
    assert [number for number, _, _ in found] == list(range(1, len(expected) + 1))
    for _, line, offset in found:
        assert line is not None and data[offset : offset + len(line)] == line


def test_read_lines_reports_over_long_lines_without_keeping_them() -> None:
    data = b"short\n" + b"x" * 50 + b"\nnext\n" + b"y" * 50
    assert [(n, line) for n, line, _ in read_lines(io.BytesIO(data), max_len=10)] == [
        (1, b"short"),
        (2, None),
        (3, b"next"),
        (4, None),
    ]


def test_hl7_message_over_the_limit_fails_alone() -> None:
    big = b"MSH|^~\\&|A|B|C|D|2024||ORU^R01|BIG|P|2.5\rOBX|1|ST|x||" + b"z" * 300 + b"\r"
    small = b"MSH|^~\\&|A|B|C|D|2024||ORU^R01|OK|P|2.5\rPID|1||M\r"
    items = list(hl7_items(io.BytesIO(big + small), replace(Limits(), hl7_message_max=200)))
    assert isinstance(items[0], BadItem) and items[0].reason == "too_large"
    assert isinstance(items[1], RecordItem) and items[1].label == "OK"


def _patient(pid: str) -> dict[str, Any]:
    return {"resource": {"resourceType": "Patient", "id": pid}}


def _obs(ref: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Observation", "valueQuantity": {"value": 1}}
    if ref:
        resource["subject"] = {"reference": ref}
    return {"resource": resource}


def test_document_with_a_subjectless_observation_among_patients() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [_patient("a"), _patient("b"), _obs("Patient/a"), _obs(None)],
    }
    items = list(document_items(json.dumps(bundle).encode()))
    assert [type(i).__name__ for i in items] == ["RecordItem", "RecordItem", "BadItem"]
    assert isinstance(items[2], BadItem) and items[2].reason == "no_subject"
    first = items[0]
    assert isinstance(first, RecordItem) and len(json.loads(first.body)["entry"]) == 2


def test_document_of_one_patient_takes_subjectless_observations() -> None:
    bundle = {"resourceType": "Bundle", "entry": [_patient("a"), _obs(None), _obs("Patient/a")]}
    data = json.dumps(bundle).encode()
    assert list(document_items(data)) == [
        RecordItem(None, data, RecordFormat.fhir_json, "Patient/a")
    ]


def test_document_bundle_of_bundles() -> None:
    inner = [
        {"resource": {"resourceType": "Bundle", "entry": [_patient(p), _obs(f"Patient/{p}")]}}
        for p in "xy"
    ]
    items = list(document_items(json.dumps({"resourceType": "Bundle", "entry": inner}).encode()))
    assert [i.label for i in items] == ["Patient/x", "Patient/y"]


def _engine(**settings: Any) -> BatchEngine:
    return BatchEngine(
        RecordScorer(),
        BatchSettings("demo", IntakePath.cli, frozenset({OutputKind.ndjson}), **settings),
    )


def test_ndjson_patient_with_too_many_resources_fails_alone(tmp_path: Path) -> None:
    lines = [{"resourceType": "Patient", "id": "big"}] + [_obs("Patient/big")["resource"]] * 5
    lines += [{"resourceType": "Patient", "id": "ok"}, _obs("Patient/ok")["resource"]]
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    engine = _engine(limits=replace(Limits(), records_per_request_max=4))
    job = engine.begin(tmp_path / "work", source, source.name, source.name, "j")
    assert engine.run(job)
    out = tmp_path / "out"
    out.mkdir()
    summary = engine.publish(job, out)
    assert (summary.ok, dict(summary.reasons)) == (1, {"too_large": 1})


def test_stop_during_the_ndjson_index_then_resume(tmp_path: Path) -> None:
    """10,001 resources of one patient: the index is interrupted after its first 10,000
    rows; the next run rebuilds it and finishes (one record, over the resource limit)."""
    source = tmp_path / "in.ndjson"
    line = json.dumps(_obs("Patient/p")["resource"]) + "\n"
    source.write_text(line * 10_001)
    engine = _engine(limits=Limits())
    job = engine.begin(tmp_path / "work", source, source.name, source.name, "j")
    assert engine.run(job, stop=lambda: True) is False
    assert (tmp_path / "work" / INDEX_NAME).exists()
    resumed = engine.resume(tmp_path / "work")
    assert resumed.journal.records_done == 0
    assert engine.run(resumed)
    out = tmp_path / "out"
    out.mkdir()
    summary = engine.publish(resumed, out)
    assert (summary.records, dict(summary.reasons)) == (1, {"too_large": 1})


def _ndjson_records(tmp_path: Path, lines: list[bytes], limits: Limits) -> list[Any]:
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"".join(line + b"\n" for line in lines))
    (tmp_path / "work").mkdir()
    with source.open("rb") as stream:
        return list(ndjson_items(stream, ReadContext(limits, 1_000_000, tmp_path / "work")))


def _bundle(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


def test_ndjson_bundle_line_of_one_patient_is_handed_over_unchanged(tmp_path: Path) -> None:
    """A line that is all one patient's goes to the pipeline as it is; a line that also
    holds other data, or a patient also named on another line, becomes a collection of
    that patient's entries only."""
    only_a = _bundle(_patient("a"), _obs(None), _obs("Patient/a"), {"request": {"method": "GET"}})
    with_other = _bundle(_patient("b"), {"resource": {"resourceType": "Medication"}})
    spread = _bundle(_patient("c"), _obs("Patient/c"))
    late = json.dumps(_obs("Patient/c")["resource"]).encode()
    items = _ndjson_records(tmp_path, [only_a, with_other, spread, late], Limits())
    assert [(i.label, i.lines) for i in items] == [
        ("Patient/a", (1, 1)),
        ("Patient/b", (2, 2)),
        ("Patient/c", (3, 4)),
    ]
    assert items[0].body == only_a
    assert items[1].body != with_other
    assert [e["resource"]["resourceType"] for e in json.loads(items[1].body)["entry"]] == [
        "Patient"
    ]
    assert len(json.loads(items[2].body)["entry"]) == 3


def test_ndjson_bundle_line_counts_its_resources_against_the_limit(tmp_path: Path) -> None:
    big = _bundle(_patient("a"), _obs("Patient/a"), _obs("Patient/a"))
    small = _bundle(_patient("b"), _obs("Patient/b"))
    items = _ndjson_records(tmp_path, [big, small], replace(Limits(), records_per_request_max=2))
    assert isinstance(items[0], BadItem) and items[0].reason == "too_large"
    assert isinstance(items[1], RecordItem) and items[1].body == small


def _padded_obs(pid: str, value: int) -> dict[str, Any]:
    obs: dict[str, Any] = _obs(f"Patient/{pid}")["resource"] | {"note": [{"text": "n" * 6000}]}
    obs["valueQuantity"] = {"value": value}
    return obs


def _bulk_export(stream: TextIO) -> None:
    """Every Patient first, then every Observation: each patient gathered from 4 lines."""
    for i in range(1000):
        stream.write(json.dumps({"resourceType": "Patient", "id": f"p{i}"}) + "\n")
    for k in range(3):
        for i in range(1000):
            stream.write(json.dumps(_padded_obs(f"p{i}", k)) + "\n")


def _bundle_lines(stream: TextIO) -> None:
    """One Bundle per patient per line: each line handed over as it is."""
    for i in range(1000):
        entries = [_patient(f"p{i}")] + [{"resource": _padded_obs(f"p{i}", k)} for k in range(3)]
        stream.write(json.dumps({"resourceType": "Bundle", "entry": entries}) + "\n")


@pytest.mark.parametrize("layout", [_bulk_export, _bundle_lines])
def test_large_ndjson_streams_with_flat_memory(
    tmp_path: Path, layout: Callable[[TextIO], None]
) -> None:
    """An 18 MB NDJSON file, a bulk export or a Bundle per line, is scored while Python
    holds well under 4 MB at any time."""
    source = tmp_path / "export.ndjson"
    with source.open("w") as stream:
        layout(stream)
    assert source.stat().st_size > 18_000_000
    engine = _engine(limits=Limits(), checkpoint_records=500)
    job = engine.begin(tmp_path / "work", source, source.name, source.name, "j")
    tracemalloc.start()
    try:
        assert engine.run(job)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, peak
    out = tmp_path / "out"
    out.mkdir()
    summary = engine.publish(job, out)
    assert (summary.records, summary.ok) == (1000, 1000)


def test_hl7_dump_with_mllp_frame_bytes(tmp_path: Path) -> None:
    framed = b"".join(
        b"\x0bMSH|^~\\&|A|B|C|D|2024||ORU^R01|" + cid + b"|P|2.5\rPID|1||M\r\x1c\r"
        for cid in (b"F1", b"F2")
    )
    items = list(hl7_items(io.BytesIO(framed), Limits()))
    assert [(type(i).__name__, i.label) for i in items] == [
        ("RecordItem", "F1"),
        ("RecordItem", "F2"),
    ]
    first = items[0]
    assert (
        isinstance(first, RecordItem)
        and first.body.startswith(b"MSH|")
        and b"\x1c" not in first.body
    )
    dump = tmp_path / "traffic.dat"
    dump.write_bytes(framed)
    with dump.open("rb") as stream:
        assert detect_format(stream, dump.name, Limits()) is InputFormat.hl7v2


def test_ndjson_with_a_byte_order_mark(tmp_path: Path) -> None:
    source = tmp_path / "bom.ndjson"
    lines = [{"resourceType": "Patient", "id": "a"}, _obs("Patient/a")["resource"]]
    source.write_bytes(BOM + b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    engine = _engine(limits=Limits())
    job = engine.begin(tmp_path / "work", source, source.name, source.name, "j")
    assert engine.run(job)
    out = tmp_path / "out"
    out.mkdir()
    assert engine.publish(job, out).ok == 1
