"""What the HTTP edge refuses before a route runs (the guard's 401, 408, 413, 415 and
429, the listener's 431): counted per request and written to the audit log, coalesced.

A refused request reaches neither the pipeline nor its audit entry, yet failed logins and
floods are what a security officer reads the audit log for. Each refusal is audited in the
compact edge form (``agent.types.EdgeRefusal``): time, request id, intake, the peer's
address, the token's state, the route template, a configured model's name, the reason.
Nothing the caller chose is written verbatim except the bounded request id: the path
becomes its route template (``unmatched`` when none), a model name is kept only when it
names a configured model, a token only as the id of an accepted one.

Coalesced as ``agent.intake.edge_audit`` says, with the MLLP listener's.

Used from the event loop only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from starlette.routing import Match, Route
from starlette.types import Scope

from agent.dataplane import DataPlane
from agent.errors import AgentError, RequestHeadTooLarge
from agent.intake.edge_audit import RefusalAudit
from agent.intake.http.cds_hooks import model_of_service
from agent.types import EdgeRefusal, IntakePath

UNMATCHED = "unmatched"  # the route of a path that matches no route template

_ROUTE_MODEL = re.compile(r"^/(v1|v2)/models/([^/]+)|^/cds-services/([^/]+)")


def route_of(path: str) -> tuple[str, IntakePath]:
    """The model a path names (for counting; the data plane maps names it does not serve
    to ``unknown``) and the intake path it speaks."""
    match = _ROUTE_MODEL.match(path)
    if match is None:
        return "", IntakePath.http
    if match[3] is not None:
        return model_of_service(match[3]), IntakePath.cds_hooks
    return match[2], IntakePath.oip if match[1] == "v2" else IntakePath.http


class EdgeRefusals:
    """See the module docstring."""

    def __init__(self, plane: DataPlane, routes: Sequence[Route], window: float) -> None:
        self._plane = plane
        self._routes = routes
        self._audit = RefusalAudit(plane, window)

    def refused(self, scope: Scope, error: AgentError, token: str | None) -> None:
        """The guard refused the request of ``scope`` with ``error``; ``token``: the id of
        the accepted token, ``absent`` or ``wrong``, None when no token is required."""
        name, intake = route_of(scope["path"])
        self._plane.count_refusal(name, intake, error)
        state = scope["state"]
        client = scope.get("client")
        self._audit.record(
            EdgeRefusal(
                when=time.time(),
                request_id=state["request_id"],
                intake=intake,
                peer=client[0] if client else "unknown",
                route=self._template(scope),
                reason=error.reason,
                model=name if name and name in self._plane.readiness() else "",
                token=token,
            )
        )

    def head_refused(self, peer: str) -> None:
        """The listener refused a request head past ``limits.http_header_max`` (431): the
        head was not parsed, so neither its path nor its request id is known."""
        self._plane.count_refusal("", IntakePath.http, RequestHeadTooLarge(""))
        self._audit.record_unread(IntakePath.http, peer, UNMATCHED, RequestHeadTooLarge.reason)

    def flush(self) -> None:
        """Write the repeats of every open window now."""
        self._audit.flush()

    def _template(self, scope: Scope) -> str:
        for route in self._routes:
            matched, _ = route.matches(scope)
            if matched is not Match.NONE:
                return route.path
        return UNMATCHED
