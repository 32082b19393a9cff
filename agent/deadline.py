"""Calls that may block on the outside world (a hung network share, a FIFO, a registry
that never answers), bounded in time by running them on a daemon thread.

A leaf module. A blocked system call cannot be interrupted from Python; what can be
bounded is how long the caller waits. The call goes on in its daemon thread until the
kernel returns, so the agent answers, polls and shuts down on time regardless, and a
daemon thread never holds the process at exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


def call_with_deadline(action: Callable[[], T], timeout: float, *, name: str) -> T:
    """``action()``'s result or exception, or TimeoutError after ``timeout`` seconds (the
    call is then abandoned to its daemon thread, named ``name`` for diagnosis)."""
    outcome: _Outcome[T] = _Outcome()

    def run() -> None:
        try:
            outcome.value = action()
        except BaseException as exc:  # handed to the waiting caller
            outcome.error = exc
        finally:
            outcome.done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    if not outcome.done.wait(timeout):
        raise TimeoutError(f"{name} did not finish within {timeout:g} s")
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]
