"""The shadow lane: work done for a candidate version off the request path.

One worker thread drains a bounded queue. It starts a task no sooner than ``start_delay``
seconds after it was queued: the request that queued it still has its answer to render and
send, and a worker woken at once would compete with it for the interpreter lock.
``submit`` never blocks and never raises: when
the queue is full the task is dropped and its ``on_drop`` runs instead (the caller counts
it), so a slow or trapping candidate can delay or fail no answer, and a backlog cannot grow
without bound. A task that raises is logged by type (never its message: it could quote a
record) and the lane goes on.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Task = Callable[[], None]


class ShadowLane:
    """``start()`` / ``stop()``; ``submit`` from any thread."""

    def __init__(self, capacity: int, start_delay: float = 0.0) -> None:
        self._queue: queue.Queue[tuple[float, Task] | None] = queue.Queue(maxsize=capacity)
        self._start_delay = start_delay
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="edge-agent-shadow", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Let the worker finish the task in hand and drop the rest."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        while True:  # make room for the stop marker: queued work is dropped on stop
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):  # a racing submit refilled it: join bounds us
            self._queue.put(None, timeout=timeout)
        thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def submit(self, task: Task, on_drop: Callable[[], None]) -> None:
        if self._thread is None:
            on_drop()
            return
        try:
            self._queue.put_nowait((time.monotonic(), task))
        except queue.Full:
            on_drop()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            queued, task = item
            wait = queued + self._start_delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                task()
            except Exception as exc:
                log.error("shadow scoring failed", extra={"error_type": type(exc).__name__})
