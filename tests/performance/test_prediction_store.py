"""The prediction store's writer thread: predictions queued by concurrent scorings are all
kept, an outcome posted right after its prediction still joins it, a close inserts what is
queued, and a database that does not keep up drops and counts instead of blocking."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.limits import Limits
from agent.performance.store import PredictionStore

AS_OF = datetime.now(UTC) - timedelta(hours=1)  # within the retention


class _Unrecorded:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, count: int) -> None:
        with self._lock:
            self.count += count


def _store(
    path: Path, limits: Limits | None = None, unrecorded: _Unrecorded | None = None
) -> PredictionStore:
    return PredictionStore(
        path,
        b"k" * 32,
        retention=timedelta(days=90),
        max_rows=1_000_000,
        horizon=timedelta(hours=48),
        limits=limits,
        unrecorded=unrecorded or _Unrecorded(),
    )


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM predictions").fetchone()
    return int(count)


def test_concurrent_scorings_are_all_kept_and_joinable_at_once(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    store = _store(path)
    store.start()

    def scoring(t: int) -> None:
        for n in range(250):
            store.record("m", "1.0.0", [(f"Patient/{t}-{n}", AS_OF, 0.5)])

    threads = [threading.Thread(target=scoring, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.record("m", "1.0.0", [("Patient/last", AS_OF, 0.9)])
    # queued a moment ago, joined now: readers wait for what was queued before them
    assert store.label("m", "Patient/last", AS_OF + timedelta(hours=1), 1) == 1
    assert store.labelled("m", 10) == {"1.0.0": [(0.9, 1)]}
    store.close()
    assert _rows(path) == 1_001


def test_close_inserts_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    store = _store(path)
    store.start()
    for n in range(500):
        store.record("m", "1.0.0", [(f"Patient/{n}", AS_OF, 0.1), ("", AS_OF, 0.2)])
    store.close()
    assert _rows(path) == 500  # the reference-less prediction is never kept


def test_a_database_that_does_not_keep_up_drops_and_counts(tmp_path: Path) -> None:
    """Another connection holds the write lock: the writer waits on its first batch, the
    queue fills, and scorings go on with their predictions dropped and counted."""
    path = tmp_path / "p.sqlite"
    unrecorded = _Unrecorded()
    store = _store(path, Limits(prediction_queue_max=10), unrecorded)
    store.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    for n in range(100):
        store.record("m", "1.0.0", [(f"Patient/{n}", AS_OF, 0.5)])
    assert unrecorded.count >= 100 - 2 * 10  # a batch in hand and a full queue
    blocker.execute("COMMIT")
    blocker.close()
    store.close()
    assert _rows(path) + unrecorded.count == 100


def test_without_start_the_caller_inserts(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    store = _store(path)
    store.record("m", "1.0.0", [("Patient/1", AS_OF, 0.5)])
    assert _rows(path) == 1
    store.close()


def test_a_stop_inserts_what_is_queued_and_callers_insert_after_it(tmp_path: Path) -> None:
    """The daemon's drain stops the writer; a scoring still running then keeps its own."""
    path = tmp_path / "p.sqlite"
    store = _store(path)
    store.start()
    for n in range(300):
        store.record("m", "1.0.0", [(f"Patient/{n}", AS_OF, 0.1)])
    assert store.stop(timeout=10)
    assert _rows(path) == 300
    store.record("m", "1.0.0", [("Patient/late", AS_OF, 0.1)])
    assert _rows(path) == 301
    store.close()
