"""Group commit for what a request records but need not wait for: a bounded queue and one
writer thread that writes everything queued meanwhile in one batch.

A leaf: the audit log (:mod:`agent.audit`) and the prediction store
(:mod:`agent.performance.store`) build on it. Why a request does not wait for its batch:
in CPython a cross-thread wake-up costs the waiting thread about 40 us of CPU, as much as
the writes it would wait for; the request only queues its item (a lock and an append) and
goes on.

Why the writer, once woken by a first item, gathers for ``gather`` seconds before it
writes: woken for every item, the writer cost the serving process more than writing each
item on the request's thread. With one client on keep-alive (about 1,400 answers/s), the
agent's whole CPU per FHIR predict was about 790 us with the audit written this way, 630 us
with it written inline and 520 us without an audit log: the wake-ups and the hand-overs of
the GIL between the event loop and the writer, once per answer. Gathering 5 ms writes about
seven answers' entries per wake-up and took it to about 670 us (measured on the real server,
same run, docs/benchmarks.md). A ``flush`` or ``stop`` ends the gathering at once.
What that gives up is said by each user; the mechanics are:

- until ``start`` (one-shot commands) and after ``stop``, ``submit`` writes on the caller's
  thread: nothing is queued when no writer runs;
- the queue is bounded by a count and a weight (bytes the items hold); when full, an item
  is dropped and reported to ``dropped``, never waited for;
- the writer writes at most ``gather`` seconds after the first item of a batch was queued,
  unless a ``flush`` or ``stop`` asks sooner;
- ``flush`` waits until everything submitted before it is written; ``stop`` writes what is
  queued, within its timeout, and leaves a writer stuck in a write behind (a daemon
  thread) rather than hold the process;
- a failing ``write`` in the writer drops that batch (reported, logged by type only) and
  the writer goes on with the next.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class WriteBehind(Generic[T]):
    """See the module docstring. The writer hands ``write`` its batches in submission order;
    callers writing their own items call it too, concurrently, so ``write`` serialises what
    must be (the audit file, the database) and may do the rest in parallel (the audit's
    HMAC). ``max_weight`` None: only the count bounds the queue; ``gather``: seconds the
    woken writer waits for more items before it writes (module docstring)."""

    def __init__(
        self,
        write: Callable[[list[T]], None],
        *,
        name: str,
        max_items: int,
        max_weight: int | None = None,
        gather: float,
        dropped: Callable[[int], None],
    ) -> None:
        self._write = write
        self._name = name
        self._max_items = max_items
        self._max_weight = max_weight
        self._gather = gather
        self._dropped = dropped
        self._lock = threading.Lock()  # the queue and the writer's state
        self._wake = threading.Condition(self._lock)  # the writer: work, or stop
        self._written_cond = threading.Condition(self._lock)  # ``flush``: a batch is done
        self._queue: deque[T] = deque()
        self._weight = 0
        self._submitted = 0  # items queued since the writer started
        self._written = 0  # of those, items written (or dropped by a failed write)
        self._writer: threading.Thread | None = None
        self._idle = False
        self._stopping = False
        self._flushes = 0  # callers in ``flush``: the writer stops gathering for them

    def start(self) -> None:
        with self._lock:
            if self._writer is not None:
                return
            self._stopping = False
            self._writer = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._writer.start()

    def stop(self, timeout: float) -> bool:
        """Write what is queued and end the writer within ``timeout`` seconds; False when
        it did not end in time."""
        with self._lock:
            writer = self._writer
            self._stopping = True
            self._wake.notify()
        if writer is None:
            return True
        writer.join(timeout)
        if writer.is_alive():
            log.error("a writer did not finish within its stop bound", extra={"writer": self._name})
            return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every item submitted before this call is written (or dropped); False
        if ``timeout`` seconds passed first."""
        with self._lock:
            target = self._submitted
            self._flushes += 1
            self._wake.notify()
            try:
                return self._written_cond.wait_for(lambda: self._written >= target, timeout)
            finally:
                self._flushes -= 1

    def submit(self, item: T, weight: int = 0) -> None:
        """Queue ``item`` for the writer, or write it now when no writer runs."""
        with self._lock:
            if self._writer is not None:
                if len(self._queue) >= self._max_items or (
                    self._max_weight is not None and self._weight + weight > self._max_weight
                ):
                    self._dropped(1)
                    return
                self._queue.append(item)
                self._weight += weight
                self._submitted += 1
                if self._idle:
                    self._idle = False
                    self._wake.notify()
                return
        self._write([item])

    def _run(self) -> None:
        """Everything queued while the last batch was written is the next batch."""
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._idle = True
                    self._wake.wait()
                self._idle = False
                self._wake.wait_for(lambda: self._stopping or self._flushes > 0, self._gather)
                if not self._queue:
                    self._writer = None  # from now on callers write their own items
                    self._written_cond.notify_all()
                    return
                batch = list(self._queue)
                self._queue.clear()
                self._weight = 0
            try:
                self._write(batch)
            except Exception as exc:  # a bug or a failing disk must not stop the writer
                log.error(
                    "a batch was not written",
                    extra={"writer": self._name, "error_type": type(exc).__name__},
                )
                self._dropped(len(batch))
            finally:
                with self._lock:
                    self._written += len(batch)
                    self._written_cond.notify_all()
