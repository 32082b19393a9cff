"""The local prediction store: each scored prediction, pseudonymised, until its outcome.

A row holds the model, version, an HMAC-SHA256 of the patient reference under a site secret
(``who``), the as-of time, the risk score and, once known, the label. The reference itself,
values and features are never stored, so the file holds no identifier: the pseudonym can be
matched only by someone holding both the key and the reference. Bounded by retention days
and a row cap; survives restarts (SQLite, WAL). Thread-safe.

Once ``start``ed (the daemon), a scoring only queues its predictions: a writer thread
computes the pseudonyms and inserts everything queued meanwhile in one transaction
(:mod:`agent.writebehind`), so the insert (about 20 us a row, one transaction each) is off
the request's path. Readers (``label``, ``labelled``) first wait for what was queued before
them, so an outcome posted right after its prediction still joins it. A ``kill -9`` loses
the predictions still queued (their later outcomes count as unmatched); a clean stop
inserts them all; a full queue (``limits.prediction_queue_max``) drops and counts
(``edge_agent_predictions_unrecorded_total``). Before ``start`` and after ``stop`` the
caller inserts its own rows.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

from agent.errors import ConfigError
from agent.limits import Limits
from agent.writebehind import WriteBehind

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL, who TEXT NOT NULL,
    as_of REAL NOT NULL, score REAL NOT NULL, label INTEGER);
CREATE INDEX IF NOT EXISTS by_patient ON predictions (model, who, as_of);
CREATE INDEX IF NOT EXISTS by_version ON predictions (model, version, label, id);
"""
_KEY_BYTES = 32
_Pending = tuple[str, str, list[tuple[str, float, float]]]  # model, version, rows


def load_or_make_key(path: Path) -> bytes:
    """The site secret in ``path``; made (0600, random) when the file does not exist."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pseudonym key ({exc.strerror})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(_KEY_BYTES).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(key)
        os.fsync(stream.fileno())
    return key


class PredictionStore:
    """See the module docstring."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        *,
        retention: timedelta,
        max_rows: int,
        horizon: timedelta,
        limits: Limits | None = None,
        unrecorded: Callable[[int], None] = lambda count: None,
    ) -> None:
        if not key:
            raise ConfigError("the pseudonym key is empty")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._key = key
        self._retention = retention
        self._max_rows = max_rows
        self._horizon = horizon
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._writes = 0
        bounds = limits or Limits()
        self._flush_wait = bounds.writer_flush_wait
        self._writer = WriteBehind(
            self._insert,
            name="prediction-writer",
            max_items=bounds.prediction_queue_max,
            gather=bounds.writer_gather,
            dropped=unrecorded,
        )

    def start(self) -> None:
        """Insert through the writer thread from now on."""
        self._writer.start()

    def pseudonym(self, model: str, reference: str) -> str:
        """HMAC of the reference, per model (so two models' stores cannot be joined)."""
        message = f"{model}\x00{reference}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def record(
        self, model: str, version: str, predictions: Iterable[tuple[str, datetime, float]]
    ) -> None:
        """Keep ``(reference, as_of, score)`` predictions; references without a name (a
        record that named no patient) cannot be joined and are not kept."""
        rows = [(ref, as_of.timestamp(), score) for ref, as_of, score in predictions if ref]
        if rows:
            self._writer.submit((model, version, rows))

    def _insert(self, batch: list[_Pending]) -> None:
        rows = [
            (model, version, self.pseudonym(model, ref), as_of, score)
            for model, version, pending in batch
            for ref, as_of, score in pending
        ]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO predictions (model, version, who, as_of, score)"
                    " VALUES (?,?,?,?,?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._writes += len(rows)
            if self._writes >= 1_000:  # prune now and then, not on every write
                self._writes = 0
                self._prune(datetime.now().astimezone())

    def label(self, model: str, reference: str, when: datetime, label: int) -> int:
        """Label the patient's unlabelled predictions made within the horizon before
        ``when``; returns how many were labelled (0: no prediction to join)."""
        who = self.pseudonym(model, reference)
        start = (when - self._horizon).timestamp()
        self._writer.flush(self._flush_wait)
        with self._lock:
            cursor = self._db.execute(
                "UPDATE predictions SET label = ? WHERE model = ? AND who = ? AND label IS NULL"
                " AND as_of BETWEEN ? AND ?",
                (label, model, who, start, when.timestamp()),
            )
            return cursor.rowcount

    def labelled(self, model: str, window: int) -> dict[str, list[tuple[float, int]]]:
        """Per version, the newest ``window`` labelled predictions as (score, label)."""
        self._writer.flush(self._flush_wait)
        with self._lock:
            versions = [
                v
                for (v,) in self._db.execute(
                    "SELECT DISTINCT version FROM predictions"
                    " WHERE model = ? AND label IS NOT NULL",
                    (model,),
                )
            ]
            return {
                version: [
                    (score, label)
                    for score, label in self._db.execute(
                        "SELECT score, label FROM predictions WHERE model = ? AND version = ?"
                        " AND label IS NOT NULL ORDER BY id DESC LIMIT ?",
                        (model, version, window),
                    )
                ]
                for version in versions
            }

    def _prune(self, now: datetime) -> None:
        self._db.execute(
            "DELETE FROM predictions WHERE as_of < ?", ((now - self._retention).timestamp(),)
        )
        self._db.execute(
            "DELETE FROM predictions WHERE id <= (SELECT MAX(id) FROM predictions) - ?",
            (self._max_rows,),
        )

    def stop(self, timeout: float) -> bool:
        """Insert what is queued and end the writer within ``timeout`` seconds (False: it
        is stuck and left behind); later predictions are inserted by their callers."""
        return self._writer.stop(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """``stop``, then close the database (left open if the writer is stuck in it)."""
        if self.stop(timeout):
            with self._lock:
                self._db.close()
