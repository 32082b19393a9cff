"""The audit log's writer thread (group commit): every entry written once and in order from
concurrent callers, rotation unchanged, a clean stop writes everything queued, a full queue
drops and counts instead of blocking, and what survives a ``kill -9`` in each write mode."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.audit import AuditLog, Retention
from agent.limits import Limits

REPO = Path(__file__).resolve().parents[2]
KEY = b"k" * 32


class _Pressure:
    def __init__(self) -> None:
        self.dropped = 0
        self._lock = threading.Lock()

    def keeping_young_files(self, keeping: bool) -> None:
        pass

    def entry_dropped(self) -> None:
        with self._lock:
            self.dropped += 1


def _record(log: AuditLog, request_id: str, body: bytes = b"{}") -> None:
    log.record(
        request_id=request_id,
        intake="http",
        caller="127.0.0.1",
        model="m",
        version="1.0.0",
        bundle_digest="d" * 64,
        body=body,
        outputs=[{"p": 0.25}],
        seconds=0.001,
        outcome="ok",
    )


def _ids(*files: Path) -> list[str]:
    return [json.loads(line)["request_id"] for f in files for line in f.read_text().splitlines()]


def test_concurrent_callers_get_every_entry_once_and_in_their_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY, Retention(max_bytes=10_000_000))
    log.start()
    threads, per_thread = 8, 500

    def caller(t: int) -> None:
        for n in range(per_thread):
            _record(log, f"{t}-{n}", body=f"{t}-{n}".encode())

    workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert log.stop()
    ids = _ids(path)
    assert len(ids) == len(set(ids)) == threads * per_thread
    for t in range(threads):  # each caller's entries in the order it recorded them
        assert [i for i in ids if i.startswith(f"{t}-")] == [f"{t}-{n}" for n in range(per_thread)]
    first = json.loads(path.read_text().splitlines()[0])
    body = first["request_id"].encode()
    assert first["input_hmac"] == hmac.new(KEY, body, hashlib.sha256).hexdigest()


def test_a_clean_stop_writes_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY, Retention(max_bytes=10_000_000))
    log.start()
    for n in range(2_000):
        _record(log, str(n))
    assert log.stop()  # no waiting after: stop returned, so every entry is in the file
    assert _ids(path) == [str(n) for n in range(2_000)]
    _record(log, "after-stop")  # written by its caller now
    assert _ids(path)[-1] == "after-stop"


def test_rotation_through_the_writer_keeps_order_and_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY, Retention(max_bytes=3_000, min_age=3600, max_files=100))
    log.start()
    for n in range(200):
        _record(log, str(n))
    assert log.stop()
    rotated = sorted(tmp_path.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    files = [*rotated, path]  # the highest index is the oldest
    assert len(files) > 5
    assert all(f.stat().st_size <= 3_000 for f in files)
    assert _ids(*files) == [str(n) for n in range(200)]


def test_events_are_written_before_record_event_returns(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY, Retention(max_bytes=10_000_000))
    log.start()
    try:
        for n in range(100):
            _record(log, str(n))
        log.record_event("promotion", "m", {"version": "1.0.1"})
        lines = path.read_text().splitlines()
        assert len(lines) == 101 and json.loads(lines[-1])["event"] == "promotion"
    finally:
        log.stop()


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path: Path) -> None:
    """The file is a FIFO nobody reads yet: the writer blocks opening it, as on a disk that
    hangs. Callers keep returning; what does not fit the queue is dropped and counted."""
    path = tmp_path / "audit.jsonl"
    os.mkfifo(path)
    pressure = _Pressure()
    limits = Limits(audit_queue_max=50, audit_queue_bytes_max=1_000_000)
    log = AuditLog(path, KEY, Retention(max_bytes=10_000_000), pressure, limits=limits)
    log.start()
    total = 500
    for n in range(total):
        _record(log, str(n))
    assert pressure.dropped >= total - 2 * limits.audit_queue_max  # a batch and a queue
    fifo = os.open(path, os.O_RDONLY)  # the disk comes back
    with os.fdopen(fifo, "rb") as reader:
        stopped = threading.Thread(target=log.stop)
        stopped.start()
        text = reader.read().decode()  # until the writer closes the file at the stop
        stopped.join()
    written = [json.loads(line)["request_id"] for line in text.splitlines()]
    assert written == sorted(written, key=int)  # in order, none twice
    assert len(written) + pressure.dropped == total


def test_the_body_bytes_bound_holds_the_queue_too(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    os.mkfifo(path)
    pressure = _Pressure()
    limits = Limits(audit_queue_max=10_000, audit_queue_bytes_max=4_000)
    log = AuditLog(path, KEY, Retention(max_bytes=10_000_000), pressure, limits=limits)
    log.start()
    for n in range(100):
        _record(log, str(n), body=b"x" * 1_000)  # at most 4 bodies wait at once
    assert pressure.dropped >= 100 - 2 * 4
    with os.fdopen(os.open(path, os.O_RDONLY), "rb") as reader:
        stopped = threading.Thread(target=log.stop)
        stopped.start()
        lines = reader.read().splitlines()
        stopped.join()
    assert len(lines) + pressure.dropped == 100


_CHILD = """
import sys
from pathlib import Path
import pytest

from agent.audit import AuditLog, Retention
batched = sys.argv[2] == "batched"
log = AuditLog(Path(sys.argv[1]), b"k" * 32, Retention(10_000_000),
               write_before_answer=not batched)
log.start()
for n in range(300):
    log.record(request_id=str(n), intake="http", caller="c", model="m", version="1.0.0",
               bundle_digest=None, body=b"{}", outputs=[], seconds=0.0, outcome="ok")
if batched:
    log.flush()
print("acknowledged", flush=True)
sys.stdin.read()
"""


def _killed_after_acknowledging(tmp_path: Path, mode: str) -> list[str]:
    path = tmp_path / f"{mode}.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), mode],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline() == "acknowledged\n"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    child.stdin.close()
    child.stdout.close()
    return _ids(path)


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """``write_before_answer``: every ``record`` that returned is in the file; batched:
    every entry recorded before a ``flush`` that returned (the daemon's stop does that)."""
    expected = [str(n) for n in range(300)]
    assert _killed_after_acknowledging(tmp_path, "before_answer") == expected
    assert _killed_after_acknowledging(tmp_path, "batched") == expected


def test_a_full_disk_drops_and_counts_and_the_log_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``/dev/full`` refuses every write with ENOSPC, as a full disk would."""
    pressure = _Pressure()
    log = AuditLog(Path("/dev/full"), KEY, Retention(max_bytes=10_000_000), pressure)
    log.start()
    for n in range(100):
        _record(log, str(n))
    assert log.stop()
    assert pressure.dropped == 100
    assert "audit log write failed" in caplog.text
