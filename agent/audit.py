"""The audit log: who asked which model what, and what it answered, without the record.

One JSON line per scoring request, appended and flushed; rotated past a size. The input is
kept only as an HMAC-SHA256 under the site's secret: the same record always gives the same
value (so an auditor holding the record and the key can match it), but the log alone
reveals nothing about the patient.

A flood must not erase history (issue 18: 5,400 refused requests in 10 s rotated every
earlier entry away). So a refused request is written compactly (no empty outputs, no
bundle digest), and rotation never deletes a file whose last entry is younger
than ``min_age``: it keeps extra files instead, up to ``max_files``. Past that, new entries
are dropped and counted rather than old ones deleted; ``edge_agent_audit_pressure`` says
while young files are being kept and ``edge_agent_audit_entries_dropped_total`` counts what
was not written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from agent.errors import ConfigError

KEEP_ROTATED = 5  # audit files kept besides the current one when they are old enough


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


class AuditLog:
    def __init__(
        self,
        path: Path,
        key: bytes,
        retention: Retention,
        pressure: AuditPressure | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < 16:
            raise ConfigError("the audit HMAC key must be at least 16 bytes")
        self._path = path
        self._key = key
        self._retention = retention
        self._pressure = pressure
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_files(
        cls, path: Path, key_file: Path, retention: Retention, pressure: AuditPressure | None
    ) -> AuditLog:
        try:
            key = key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{key_file}: cannot read the audit key: {exc.strerror}") from None
        return cls(path, key, retention, pressure)

    def input_hmac(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

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
        """Append one entry. A request that scored nothing (refused) gets the compact form:
        no ``outputs`` and no ``bundle_digest`` (its ``version``, if one was reached, is
        kept: together with the store it names the same bundle)."""
        entry: dict[str, object] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": request_id,
            "intake": intake,
            "caller": caller,
            "model": model,
        }
        if version is not None:
            entry["version"] = version
        if bundle_digest is not None and outputs:
            entry["bundle_digest"] = bundle_digest
        entry["input_hmac"] = self.input_hmac(body)
        if outputs:
            entry["outputs"] = [dict(o) for o in outputs]
        entry["seconds"] = round(seconds, 6)
        entry["outcome"] = outcome
        self._append(entry)

    def record_event(self, event: str, model: str, evidence: Mapping[str, object]) -> None:
        """A change of what answers for ``model`` (``activation``, ``staging``,
        ``promotion``, ``rollback``, ``abandonment``) with the evidence at that moment:
        versions, digests, comparison figures, gate results, the operator's reason. Never
        patient data."""
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "model": model,
            **evidence,
        }
        self._append(entry)

    def _append(self, entry: Mapping[str, object]) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if not self._room_for(len(line)):
                if self._pressure is not None:
                    self._pressure.entry_dropped()
                return
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _rotated(self, index: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{index}")

    def _room_for(self, incoming: int) -> bool:
        """Rotates when the current file would pass ``max_bytes``: rotated files beyond
        ``KEEP_ROTATED`` are deleted oldest first while their last entry is older than
        ``min_age``; when ``max_files`` are then still needed, nothing rotates and the
        entry has no room (``False``)."""
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            return True
        if size + incoming <= self._retention.max_bytes:
            return True
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
        os.replace(self._path, self._rotated(1))
        if self._pressure is not None:
            self._pressure.keeping_young_files(rotated + 1 > KEEP_ROTATED)
        return True
