"""Edge refusals written to the audit log, coalesced: what the HTTP edge and the MLLP
listener refuse before anything reaches the pipeline (a refused login, a flood, a client
not allowed, a frame that is not HL7 or too large) is what a security officer reads the
audit log for, yet a client could be refused thousands of times a second.

So the first refusal of a kind (same peer, intake, route, model, token state and reason) is
written at once, and the identical ones that follow within ``window`` seconds are written as
one entry at the window's end, with their ``count``, the time and request id of the first of
them. One client then writes at most two entries a second per kind, whatever its rate, and
cannot push the audit log into the retention pressure that would drop legitimate entries.
``flush`` writes the windows still open (each edge calls it when it stops, before the audit
log's own stop).

Used from the event loop only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace

from agent.dataplane import DataPlane
from agent.types import EdgeRefusal, IntakePath

_Kind = tuple[str, IntakePath, str, str, str, str | None]


@dataclass
class _Window:
    """Identical refusals after the first, within one window."""

    first: EdgeRefusal | None = None
    repeats: int = 0


class RefusalAudit:
    """See the module docstring."""

    def __init__(self, plane: DataPlane, window: float) -> None:
        self._plane = plane
        self._window = window
        self._open: dict[_Kind, _Window] = {}

    def record(self, refusal: EdgeRefusal) -> None:
        """Audit ``refusal`` now, or fold it into the open window of its kind."""
        kind = (
            refusal.peer,
            refusal.intake,
            refusal.route,
            refusal.model,
            refusal.reason,
            refusal.token,
        )
        window = self._open.get(kind)
        if window is not None:
            if window.first is None:
                window.first = refusal
            window.repeats += 1
            return
        self._plane.audit_refusal(refusal)
        self._open[kind] = _Window()
        asyncio.get_running_loop().call_later(self._window, self._close, kind)

    def record_unread(
        self, intake: IntakePath, peer: str, route: str, reason: str, model: str = ""
    ) -> None:
        """Audit the refusal of something refused before it was read (a connection, a frame,
        a request head): it carries no request id of its own, so it gets a fresh one."""
        self.record(
            EdgeRefusal(
                when=time.time(),
                request_id=uuid.uuid4().hex,
                intake=intake,
                peer=peer,
                route=route,
                reason=reason,
                model=model,
            )
        )

    def flush(self) -> None:
        """Write the repeats of every open window now."""
        for kind in list(self._open):
            self._close(kind)

    def _close(self, kind: _Kind) -> None:
        window = self._open.pop(kind, None)
        if window is not None and window.first is not None:
            self._plane.audit_refusal(replace(window.first, count=window.repeats))
