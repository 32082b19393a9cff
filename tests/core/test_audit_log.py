import json
from pathlib import Path

import pytest

from agent.audit import AuditLog
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
    log = AuditLog(path, b"k" * 32, max_bytes=10_000)
    body = b'{"resourceType":"Patient","name":[{"family":"Zyxwvutson"}]}'
    _record(log, body)
    _record(log, body, outcome="unmappable")
    text = path.read_text()
    assert "Zyxwvutson" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["input_hmac"] == second["input_hmac"] == log.input_hmac(body)
    assert first["outcome"] == "ok" and second["outcome"] == "unmappable"
    assert AuditLog(path, b"x" * 32, 10_000).input_hmac(body) != first["input_hmac"]


def test_rotation_keeps_every_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, b"k" * 32, max_bytes=2_500)  # ~8 lines per file: 3 files
    for i in range(20):
        _record(log, str(i).encode())
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 1
    lines = sum(len(f.read_text().splitlines()) for f in files)
    assert lines == 20


def test_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        AuditLog(tmp_path / "a", b"short", 1000)
