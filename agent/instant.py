"""ISO 8601 instants as callers write them (an ``as_of`` query, an outcome's time, a CLI
flag, an outcomes CSV): ``Z`` allowed, a time without an offset read as UTC. A leaf."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_instant(text: str) -> datetime | None:
    """``text`` as an aware datetime; None when it is not an ISO 8601 date-time."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
