"""The group-commit queue on its own: a failing batch is dropped and counted and the
writer goes on; flush waits for what was submitted before it."""

from __future__ import annotations

import threading

from agent.writebehind import WriteBehind


def test_a_failing_batch_is_counted_and_the_writer_goes_on() -> None:
    written: list[int] = []
    dropped: list[int] = []
    failed = threading.Event()

    def write(batch: list[int]) -> None:
        if not failed.is_set():
            failed.set()
            raise OSError("no space left")
        written.extend(batch)

    queue: WriteBehind[int] = WriteBehind(
        write, name="test-writer", max_items=10_000, dropped=dropped.append
    )
    queue.start()
    for n in range(1_000):
        queue.submit(n)
    assert queue.flush(timeout=10)
    assert failed.is_set() and sum(dropped) > 0
    assert len(written) + sum(dropped) == 1_000
    assert written == sorted(written)  # what was written, in submission order
    queue.submit(1_000)
    assert queue.stop(timeout=10)
    assert written[-1] == 1_000


def test_without_a_writer_submit_writes_at_once() -> None:
    written: list[str] = []
    queue: WriteBehind[str] = WriteBehind(
        written.extend, name="test-writer", max_items=1, dropped=lambda count: None
    )
    queue.submit("a")
    assert written == ["a"]
    assert queue.flush(timeout=0)
