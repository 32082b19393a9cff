"""The group-commit queue on its own: a failing batch is dropped and counted and the
writer goes on; flush waits for what was submitted before it; what is queued while the
writer gathers is one batch, and a flush or stop ends the gathering at once."""

from __future__ import annotations

import threading
import time

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
        write, name="test-writer", max_items=10_000, gather=0.0, dropped=dropped.append
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
        written.extend, name="test-writer", max_items=1, gather=0.0, dropped=lambda count: None
    )
    queue.submit("a")
    assert written == ["a"]
    assert queue.flush(timeout=0)


def _batches(gather: float) -> tuple[WriteBehind[int], list[list[int]]]:
    batches: list[list[int]] = []
    queue: WriteBehind[int] = WriteBehind(
        batches.append,
        name="test-writer",
        max_items=10_000,
        gather=gather,
        dropped=lambda count: None,
    )
    queue.start()
    return queue, batches


def test_items_queued_while_the_writer_gathers_are_one_batch_and_flush_ends_it() -> None:
    queue, batches = _batches(gather=600.0)  # longer than any test: only flush can end it
    for n in range(100):
        queue.submit(n)
    assert queue.flush(timeout=10)
    assert batches == [list(range(100))]
    assert queue.stop(timeout=10)


def test_stop_ends_the_gathering_and_writes_what_is_queued() -> None:
    queue, batches = _batches(gather=600.0)
    queue.submit(1)
    assert queue.stop(timeout=10)
    assert batches == [[1]]


def test_the_writer_writes_on_its_own_once_the_gathering_is_over() -> None:
    queue, batches = _batches(gather=0.01)
    queue.submit(1)
    deadline = time.monotonic() + 10
    while not batches and time.monotonic() < deadline:
        time.sleep(0.001)  # polling the outcome under a deadline, not ordering events
    assert batches == [[1]]
    assert queue.stop(timeout=10)
