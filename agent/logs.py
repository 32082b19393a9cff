"""Structured logging: one JSON object per line, for journald and log shippers.

Only fields the code passes explicitly through ``extra=`` are written, from an allow-list,
so a record's content cannot reach a log line by accident (exception messages are not
written at all: only the exception's type).
"""

from __future__ import annotations

import json
import logging
import sys
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
