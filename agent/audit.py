"""The audit log: who asked which model what, and what it answered, without the record.

One JSON line per scoring request, appended and flushed; rotated past a size. The input is
kept only as an HMAC-SHA256 under the site's secret: the same record always gives the same
value (so an auditor holding the record and the key can match it), but the log alone
reveals nothing about the patient.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.errors import ConfigError

KEEP_ROTATED = 5  # audit files kept besides the current one


class AuditLog:
    def __init__(self, path: Path, key: bytes, max_bytes: int) -> None:
        if len(key) < 16:
            raise ConfigError("the audit HMAC key must be at least 16 bytes")
        self._path = path
        self._key = key
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_files(cls, path: Path, key_file: Path, max_bytes: int) -> AuditLog:
        try:
            key = key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{key_file}: cannot read the audit key: {exc.strerror}") from None
        return cls(path, key, max_bytes)

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
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": request_id,
            "intake": intake,
            "caller": caller,
            "model": model,
            "version": version,
            "bundle_digest": bundle_digest,
            "input_hmac": self.input_hmac(body),
            "outputs": [dict(o) for o in outputs],
            "seconds": round(seconds, 6),
            "outcome": outcome,
        }
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
            self._rotate_if_needed(len(line))
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self._max_bytes:
            return
        for index in range(KEEP_ROTATED - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{index}")
            if older.exists():
                os.replace(older, self._path.with_name(f"{self._path.name}.{index + 1}"))
        os.replace(self._path, self._path.with_name(f"{self._path.name}.1"))
