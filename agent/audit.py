"""The audit log: who asked which model what, and what it answered, without the record.

One JSON line per scoring request, appended to a file the log keeps open (its size is
tracked in memory); rotated past a size. The input is kept only as an HMAC-SHA256 under the
site's secret: the same record always gives the same value (so an auditor holding the record
and the key can match it), but the log alone reveals nothing about the patient.

**When an entry is written** (docs/reliability.md, "The audit log's write contract"). In the
daemon the log runs a writer thread (``start``): a scoring request only queues its entry, and
the writer computes the HMAC, encodes and appends every entry queued meanwhile with one
``write(2)`` (group commit). Waiting for the writer from the request would not pay: a
cross-thread wake-up in CPython costs the waiting thread about 40 us of CPU, as much as
writing the entry inline (the HMAC of a 40 kB body alone is 26 us). So the answer does
not wait: it may leave before its entry reaches the OS, by up to ``limits.writer_gather``
(5 ms: the writer gathers that long once woken, so it wakes once for several answers).
What that allows, and nothing more: a ``kill -9``, an OOM kill or a crash of the process
loses the entries still queued at that instant (those of answers from the last moments); a
clean stop (``stop``, called by the daemon's drain) writes every queued entry first.
Lifecycle events (``record_event``: activation, promotion, rollback...) are rare and are
always written before ``record_event`` returns. ``write_before_answer`` (config
``audit.write_before_answer``), one-shot commands that never ``start`` the log, and anything
recorded after ``stop`` write on the caller's thread before ``record`` returns: each entry is
then handed to the OS before the answer it records. Neither mode fsyncs: a power loss can
lose what the OS had not yet put on disk.

A flood must not erase history (issue 18: 5,400 refused requests in 10 s rotated every
earlier entry away). So a refused request is written compactly (no empty outputs, no
bundle digest), and rotation never deletes a file whose last entry is younger
than ``min_age``: it keeps extra files instead, up to ``max_files``. Past that, new entries
are dropped and counted rather than old ones deleted; ``edge_agent_audit_pressure`` says
while young files are being kept and ``edge_agent_audit_entries_dropped_total`` counts what
was not written. The writer's queue is bounded (``limits.audit_queue_max`` entries and
``limits.audit_queue_bytes_max`` bytes of bodies): when the disk does not keep up, new
entries are dropped and counted the same way; a request never waits for room. A write the
OS refuses (disk full) drops that batch, counted and logged, and the next one tries again.

Requests the HTTP edge refuses before a route runs (``record_refusal``: a bad token, a body
too large, a client over its bound) get the most compact entry of all: no body was read, so
there is no HMAC; the edge bounds every field and coalesces identical refusals
(``agent.intake.http.refusals``). docs/operations.md, "The audit log", lists every field.

The log owns its files: rotate them with its own settings, not with ``logrotate`` (the open
file would follow the renamed one).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

from agent.errors import ConfigError
from agent.limits import Limits
from agent.types import EdgeRefusal
from agent.writebehind import WriteBehind

KEEP_ROTATED = 5  # audit files kept besides the current one when they are old enough

log = logging.getLogger(__name__)


class AuditPressure(Protocol):
    """Where the audit log reports pressure (``agent.monitor.metrics.AuditMetrics``)."""

    def keeping_young_files(self, keeping: bool) -> None: ...

    def entry_dropped(self) -> None: ...


@dataclass(frozen=True)
class Retention:
    """How rotated files are retired."""

    max_bytes: int  # bytes: the current file is rotated past this size
    min_age: float = 0.0  # seconds: a rotated file with a younger last entry is kept
    max_files: int = KEEP_ROTATED + 1  # files at most, the current one included


def _instant(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


class _Scoring(NamedTuple):
    """A scoring as the request hands it over: the writer does the costly part (HMAC,
    encoding), so building one is all a request pays (a named tuple: a third of a frozen
    dataclass's cost to build)."""

    when: float  # Unix time the request was recorded
    request_id: str
    intake: str
    caller: str
    model: str
    version: str | None
    bundle_digest: str | None
    body: bytes
    outputs: Sequence[Mapping[str, float]]
    seconds: float
    outcome: str

    def line(self, key: bytes) -> bytes:
        entry: dict[str, object] = {
            "time": _instant(self.when),
            "request_id": self.request_id,
            "intake": self.intake,
            "caller": self.caller,
            "model": self.model,
        }
        if self.version is not None:
            entry["version"] = self.version
        if self.bundle_digest is not None and self.outputs:
            entry["bundle_digest"] = self.bundle_digest
        entry["input_hmac"] = hmac.digest(key, self.body, "sha256").hex()
        if self.outputs:
            entry["outputs"] = [dict(o) for o in self.outputs]
        entry["seconds"] = round(self.seconds, 6)
        entry["outcome"] = self.outcome
        return _encode(entry)


@dataclass(frozen=True, slots=True)
class _Event:
    when: float
    event: str
    model: str
    evidence: Mapping[str, object]

    def line(self, key: bytes) -> bytes:
        return _encode(
            {"time": _instant(self.when), "event": self.event, "model": self.model, **self.evidence}
        )


@dataclass(frozen=True, slots=True)
class _Refused:
    """A request refused at the edge: nothing of it was read, so nothing is hashed."""

    refusal: EdgeRefusal

    def line(self, key: bytes) -> bytes:
        refusal = self.refusal
        entry: dict[str, object] = {
            "time": _instant(refusal.when),
            "request_id": refusal.request_id,
            "intake": refusal.intake.value,
            "caller": refusal.peer,
        }
        if refusal.token is not None:
            entry["token"] = refusal.token
        entry["route"] = refusal.route
        if refusal.model:
            entry["model"] = refusal.model
        entry["outcome"] = refusal.reason
        if refusal.count > 1:
            entry["count"] = refusal.count
        return _encode(entry)


_Entry = _Scoring | _Event | _Refused


def _count_dropped(pressure: AuditPressure | None, count: int) -> None:
    if pressure is not None:
        for _ in range(count):
            pressure.entry_dropped()


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # what json.dumps(entry, separators=...)
# builds on every call; one is stateless, so the writer and callers share it


def _encode(entry: Mapping[str, object]) -> bytes:
    return (_ENCODER.encode(entry) + "\n").encode()


class _AuditFile:
    """The current file, held open with its size in memory, and its rotation. Not
    thread-safe: the log serialises every call."""

    def __init__(
        self,
        path: Path,
        retention: Retention,
        pressure: AuditPressure | None,
        clock: Callable[[], float],
    ) -> None:
        self._path = path
        self._retention = retention
        self._pressure = pressure
        self._clock = clock
        self._fd: int | None = None
        self._size = 0  # bytes in the current file, written or about to be

    def append(self, lines: Sequence[bytes]) -> None:
        """Append ``lines`` in order, rotating between two of them when the next would
        pass ``max_bytes``; a line with no room is dropped and counted."""
        pending: list[bytes] = []
        done = 0  # lines written or dropped
        try:
            self._open()
            for line in lines:
                if self._size and self._size + len(line) > self._retention.max_bytes:
                    self._write(pending)
                    done += len(pending)
                    pending = []
                    if not self._rotate():
                        _count_dropped(self._pressure, 1)
                        done += 1
                        continue
                pending.append(line)
                self._size += len(line)
            self._write(pending)
        except OSError as exc:
            # the disk is full or failing: what is left of the batch is lost (counted); the
            # file is opened again for the next batch
            log.error("audit log write failed", extra={"error": exc.strerror or type(exc).__name__})
            _count_dropped(self._pressure, len(lines) - done)
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _open(self) -> None:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size

    def _write(self, lines: list[bytes]) -> None:
        if not lines or self._fd is None:
            return
        view = memoryview(b"".join(lines))
        while view:
            view = view[os.write(self._fd, view) :]

    def _rotated(self, index: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{index}")

    def _rotate(self) -> bool:
        """Rotated files beyond ``KEEP_ROTATED`` are deleted oldest first while their last
        entry is older than ``min_age``; when ``max_files`` are then still needed, nothing
        rotates and the entry has no room (``False``)."""
        rotated = 0
        while self._rotated(rotated + 1).exists():
            rotated += 1
        retire_before = self._clock() - self._retention.min_age
        while rotated >= KEEP_ROTATED and self._rotated(rotated).stat().st_mtime < retire_before:
            self._rotated(rotated).unlink()
            rotated -= 1
        if rotated + 1 >= self._retention.max_files:
            if self._pressure is not None:
                self._pressure.keeping_young_files(True)
            return False
        for index in range(rotated, 0, -1):
            os.replace(self._rotated(index), self._rotated(index + 1))
        self.close()
        os.replace(self._path, self._rotated(1))
        self._open()
        if self._pressure is not None:
            self._pressure.keeping_young_files(rotated + 1 > KEEP_ROTATED)
        return True


class AuditLog:
    """See the module docstring. Every method is safe to call from any thread."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        retention: Retention,
        pressure: AuditPressure | None = None,
        clock: Callable[[], float] = time.time,
        *,
        limits: Limits | None = None,
        write_before_answer: bool = False,
    ) -> None:
        if len(key) < 16:
            raise ConfigError("the audit HMAC key must be at least 16 bytes")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._key = key
        self._file = _AuditFile(path, retention, pressure, clock)
        self._file_lock = threading.Lock()  # appends (the HMACs are computed outside it), close
        bounds = limits or Limits()
        self._flush_wait = bounds.writer_flush_wait
        self._batched = not write_before_answer
        self._writer = WriteBehind(
            self._append,
            name="audit-writer",
            max_items=bounds.audit_queue_max,
            max_weight=bounds.audit_queue_bytes_max,
            gather=bounds.writer_gather,
            dropped=lambda count: _count_dropped(pressure, count),
        )

    @classmethod
    def from_files(
        cls,
        path: Path,
        key_file: Path,
        retention: Retention,
        pressure: AuditPressure | None,
        *,
        limits: Limits | None = None,
        write_before_answer: bool = False,
    ) -> AuditLog:
        try:
            key = key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{key_file}: cannot read the audit key: {exc.strerror}") from None
        return cls(
            path,
            key,
            retention,
            pressure,
            limits=limits,
            write_before_answer=write_before_answer,
        )

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Write through the writer thread from now on (unless ``write_before_answer``)."""
        if self._batched:
            self._writer.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Write every queued entry, end the writer and close the file, within ``timeout``
        seconds; False when the writer did not finish in time (a disk that hangs: it is
        left behind as a daemon thread). Entries recorded afterwards are written by their
        callers."""
        if not self._writer.stop(timeout):
            return False
        with self._file_lock:
            self._file.close()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every entry recorded before this call is written (or dropped and
        counted); False if ``timeout`` seconds passed first."""
        return self._writer.flush(timeout)

    # --- what is recorded -----------------------------------------------------------------
    def record(
        self,
        *,
        request_id: str,
        intake: str,
        caller: str,
        model: str,
        version: str | None,
        bundle_digest: str | None,
        body: bytes,
        outputs: Sequence[Mapping[str, float]],
        seconds: float,
        outcome: str,
    ) -> None:
        """Append one entry (queued for the writer while it runs). A request that scored
        nothing (refused) gets the compact form: no ``outputs`` and no ``bundle_digest``
        (its ``version``, if one was reached, is kept: together with the store it names the
        same bundle)."""
        self._writer.submit(
            _Scoring(
                time.time(),
                request_id,
                intake,
                caller,
                model,
                version,
                bundle_digest,
                body,
                outputs,
                seconds,
                outcome,
            ),
            len(body),
        )

    def record_refusal(self, refusal: EdgeRefusal) -> None:
        """A request an edge refused before reading it (docs/operations.md, "The audit
        log"): the most compact entry, with no input HMAC (no body was read) and the
        ``count`` of identical refusals it stands for when more than one. Queued like a
        scoring, and dropped and counted under the same pressure."""
        self._writer.submit(_Refused(refusal))

    def record_event(self, event: str, model: str, evidence: Mapping[str, object]) -> None:
        """A change of what answers for ``model`` (``activation``, ``staging``,
        ``promotion``, ``rollback``, ``abandonment``) with the evidence at that moment:
        versions, digests, comparison figures, gate results, the operator's reason. Never
        patient data. Written before this returns (unless the disk hangs past
        ``limits.writer_flush_wait``: the entry then stays queued)."""
        self._writer.submit(_Event(time.time(), event, model, dict(evidence)))
        if not self._writer.flush(self._flush_wait):
            log.error("an audit event is not written yet: the audit writer is stuck")

    # --- internals ------------------------------------------------------------------------
    def _append(self, entries: list[_Entry]) -> None:
        lines = [entry.line(self._key) for entry in entries]
        with self._file_lock:
            self._file.append(lines)
