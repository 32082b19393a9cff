import hashlib
import hmac
import json
from pathlib import Path

import pytest

from agent.audit import KEEP_ROTATED, AuditLog, Retention
from agent.errors import ConfigError


def _record(log: AuditLog, body: bytes, outcome: str = "ok") -> None:
    log.record(
        request_id="r1",
        intake="http",
        caller="127.0.0.1",
        model="m",
        version="1.0.0",
        bundle_digest="d" * 64,
        body=body,
        outputs=[{"p": 0.25}],
        seconds=0.001,
        outcome=outcome,
    )


def test_entries_carry_an_hmac_not_the_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, b"k" * 32, Retention(max_bytes=10_000))
    body = b'{"resourceType":"Patient","name":[{"family":"Zyxwvutson"}]}'
    _record(log, body)
    _record(log, body, outcome="unmappable")
    text = path.read_text()
    assert "Zyxwvutson" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    # what an auditor holding the record and the site key recomputes to match the entry
    assert first["input_hmac"] == second["input_hmac"] == _hmac(b"k" * 32, body)
    assert first["outcome"] == "ok" and second["outcome"] == "unmappable"
    assert _hmac(b"x" * 32, body) != first["input_hmac"]


def _hmac(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def test_rotation_keeps_every_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, b"k" * 32, Retention(max_bytes=2_500))  # ~8 lines per file: 3 files
    for i in range(20):
        _record(log, str(i).encode())
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 1
    lines = sum(len(f.read_text().splitlines()) for f in files)
    assert lines == 20


def test_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        AuditLog(tmp_path / "a", b"short", Retention(1000))


class _Pressure:
    def __init__(self) -> None:
        self.keeping: list[bool] = []
        self.dropped = 0

    def keeping_young_files(self, keeping: bool) -> None:
        self.keeping.append(keeping)

    def entry_dropped(self) -> None:
        self.dropped += 1


def _refused(log: AuditLog, request_id: str) -> None:
    log.record(
        request_id=request_id,
        intake="http",
        caller="127.0.0.1",
        model="m",
        version=None,
        bundle_digest=None,
        body=b"x",
        outputs=[],
        seconds=0.001,
        outcome="invalid_fhir",
    )


def test_a_refused_request_is_written_compactly(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, b"k" * 32, Retention(10_000))
    _refused(log, "r2")
    entry = json.loads(path.read_text())
    assert set(entry) == {
        "time",
        "request_id",
        "intake",
        "caller",
        "model",
        "input_hmac",
        "seconds",
        "outcome",
    }


def test_a_flood_keeps_young_history_and_drops_past_max_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    pressure = _Pressure()
    retention = Retention(max_bytes=1_000, min_age=3600, max_files=KEEP_ROTATED + 3)
    log = AuditLog(path, b"k" * 32, retention, pressure)
    _record(log, b"first")
    for i in range(400):
        _refused(log, f"flood-{i}")
    files = list(tmp_path.glob("audit.jsonl*"))
    text = "".join(f.read_text() for f in files)
    assert len(files) == KEEP_ROTATED + 3
    assert '"request_id":"r1"' in text  # the entry before the flood survived it
    assert pressure.dropped > 0 and pressure.keeping[-1] is True
    assert text.count("flood-") + pressure.dropped == 400


def test_old_enough_files_are_retired_as_usual(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    pressure = _Pressure()
    retention = Retention(max_bytes=1_000, min_age=60, max_files=KEEP_ROTATED + 3)
    # a clock far ahead: every file is much older than min_age by it
    log = AuditLog(path, b"k" * 32, retention, pressure, clock=lambda: 2e12)
    for i in range(400):
        _refused(log, f"r-{i}")
    assert len(list(tmp_path.glob("audit.jsonl*"))) == KEEP_ROTATED + 1
    assert pressure.dropped == 0 and pressure.keeping[-1] is False
