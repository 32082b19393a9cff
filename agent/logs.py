"""Structured logging: one JSON object per line, for journald and log shippers.

Only fields the code passes explicitly through ``extra=`` are written, from an allow-list,
so a record's content cannot reach a log line by accident (exception messages are not
written at all: only the exception's type).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# Keys that code may attach with ``extra=``; anything else is dropped. No file names: a
# sender may name an export after its patient (drop-folder jobs are logged by job id).
ALLOWED_FIELDS = frozenset(
    {
        "model",
        "version",
        "digest",
        "keyid",
        "registry",
        "intake",
        "reason",
        "outcome",
        "request_id",
        "error_type",
        "path",
        "count",
        "seconds",
        "port",
        "host",
        "file",
        "status",
        "rows",
        "job",  # a drop-folder job's id: the claim's time in ns, never the file's name
        "problems",  # a site mapping's own errors (file:line: feature: why), config text
        "sections",  # names of config sections (a reload's that wait for a restart)
    }
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ALLOWED_FIELDS:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{k}={record.__dict__[k]}" for k in sorted(ALLOWED_FIELDS) if k in record.__dict__
        )
        return f"{record.levelname:<7} {record.name}: {record.getMessage()} {fields}".rstrip()


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would write request paths and client addresses per request;
    # the agent logs its own PHI-free request lines instead.
    logging.getLogger("uvicorn.access").disabled = True


class ThrottledWarning:
    """A warning that a flood repeats (a refused connection, a failed accept): logged at
    most once per ``interval`` seconds, with ``count`` the occurrences since the last line,
    so a client that opens thousands of connections cannot fill the disk or rotate the
    useful lines away. Not thread-safe: use it from one thread (an event loop)."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._clock = clock
        self._held = 0
        self._next = float("-inf")

    def __call__(self, **extra: Any) -> None:
        self._held += 1
        now = self._clock()
        if now < self._next:
            return
        self._logger.warning(self._message, extra={**extra, "count": self._held})
        self._held = 0
        self._next = now + self._interval


_ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's context message


def throttle_accept_failures(loop: asyncio.AbstractEventLoop, interval: float) -> None:
    """Route asyncio's report of a failed ``accept`` (out of file descriptors or memory;
    asyncio retries every second, reporting each time) through a ``ThrottledWarning``;
    every other report goes to the handler that was there before. Idempotent per loop."""
    previous = loop.get_exception_handler()
    if getattr(previous, "throttles_accept_failures", False):
        return
    warn = ThrottledWarning(
        logging.getLogger("agent.listeners"), "accept failed: out of system resources", interval
    )

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            error = context.get("exception")
            warn(error_type=type(error).__name__ if error is not None else "OSError")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.throttles_accept_failures = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
