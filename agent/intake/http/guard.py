"""The one guard in front of every HTTP route: request ids, bearer tokens, a per-client
concurrency bound, and the request body read once, here, under a size cap and a deadline.

A route never reads the socket itself: by the time it runs, its whole body is in memory and
known to be within ``limits.http_body_max`` bytes and to have arrived within
``limits.request_timeout`` seconds, whatever the route (predict, OIP infer, CDS Hooks, any
POST to come). Oversize bodies are refused from ``Content-Length`` before a byte is read, or
as soon as the running count passes the cap; a stalled body at the deadline. The deadline
(an ``asyncio.timeout``, about 8 us of CPU) is armed only while some of the body is still
to come: the listener marks a request whose body is all in (``BODY_RECEIVED``), as most
are by the time their route runs. Nothing is parsed before that. Content types are checked
here too, by route family. Every refusal (401, 408, 413, 415, 429) is handed to
``on_refusal`` (``refusals.EdgeRefusals``: counted and audited) with the state of the
caller's token, never the token.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which runs every request through an
extra task and memory streams: about 0.3 ms of CPU per request, 7 % of a FHIR predict
(measured by bench/, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Sequence

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.errors import (
    AgentError,
    RequestTimeout,
    RequestTooLarge,
    Throttled,
    Unauthorized,
    UnsupportedMediaType,
)
from agent.intake.http.config import HttpConfig
from agent.intake.http.errors import FHIR_JSON, error_response
from agent.intake.http.listener import BODY_RECEIVED
from agent.limits import Limits
from agent.outputs.operation_outcome import operation_outcome
from agent.types import RecordFormat

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
RECORD_FORMATS: dict[str, RecordFormat] = {  # what /v1/.../predict reads, by media type
    "application/fhir+json": RecordFormat.fhir_json,
    "application/json": RecordFormat.fhir_json,
    "application/fhir+ndjson": RecordFormat.fhir_ndjson,
    "application/ndjson": RecordFormat.fhir_ndjson,
    "application/x-ndjson": RecordFormat.fhir_ndjson,
    "x-application/hl7-v2+er7": RecordFormat.hl7v2,
    "application/hl7-v2+er7": RecordFormat.hl7v2,
    "application/hl7-v2": RecordFormat.hl7v2,
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

TOKEN_ABSENT = "absent"  # no bearer token presented
TOKEN_WRONG = "wrong"  # a bearer token presented and not accepted

RefusalCounter = Callable[[Scope, AgentError, str | None], None]
"""Told of each request the guard refuses: its scope, why, and its token's state (the
accepted token's id, ``TOKEN_ABSENT`` or ``TOKEN_WRONG``; None when none is required)."""


def header(scope: Scope, name: bytes) -> str:
    """The first value of the request header ``name`` (lower case, as ASGI gives names), or
    "": what Starlette's ``Headers(scope=scope).get`` answers, without a mapping built per
    request and a KeyError raised inside it for each header that is absent."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return ""


def request_id_of(scope: Scope) -> str:
    """The caller's ``X-Request-Id`` when it is a short token (at most 64 of
    ``[A-Za-z0-9._-]``), else a fresh one: the id is copied into the audit log and answers,
    so it may carry neither bulk nor free text (a name, an MRN)."""
    given = header(scope, b"x-request-id")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def media_type(scope: Scope) -> str:
    return header(scope, b"content-type").split(";")[0].strip().lower()


def _check_media_type(path: str, media: str) -> None:
    """Records to ``/v1/.../predict``; JSON (or no type) to the OIP and CDS Hooks routes."""
    if path.startswith("/v1/"):
        if media not in RECORD_FORMATS:
            raise UnsupportedMediaType(
                f"content type {media or '(none)'!r} is not accepted; use one of "
                + ", ".join(sorted(RECORD_FORMATS))
            )
    elif media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"content type {media!r} is not accepted; use application/json")


class GuardMiddleware:
    """See the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Callable[[], HttpConfig],
        limits: Limits | None = None,
        on_refusal: RefusalCounter | None = None,
    ) -> None:
        """``settings``: the HTTP section as it stands, read per request, so that a reload
        that rotates the bearer tokens takes effect at once (the daemon keeps the section
        the listener was started with when anything else in it changed)."""
        self.app = app
        self._settings = settings
        self._limits = limits or Limits()
        self._on_refusal = on_refusal
        self._in_flight: dict[str, int] = {}  # requests in progress, by client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        client = scope["client"][0] if scope.get("client") else "unknown"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["caller"] = client
        path: str = scope["path"]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        token: str | None = None
        config = self._settings()
        if config.auth_required and path not in OPEN_PATHS:
            token = self._authenticate(scope, config.bearer_token_sha256)
            if token in (TOKEN_ABSENT, TOKEN_WRONG):
                self._refused(scope, Unauthorized("no valid bearer token"), token)
                refusal = JSONResponse(
                    operation_outcome("a valid bearer token is required", code="login"),
                    status_code=401,
                    media_type=FHIR_JSON,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refusal(scope, receive, send_with_id)
                return
            state["caller"] = token
        in_flight = self._in_flight.get(client, 0)
        if in_flight >= config.max_concurrent_per_client:
            self._refused(scope, Throttled("too many concurrent requests"), token)
            throttled = JSONResponse(
                operation_outcome(
                    "too many concurrent requests from this client", code="throttled"
                ),
                status_code=429,
                media_type=FHIR_JSON,
            )
            await throttled(scope, receive, send_with_id)
            return
        self._in_flight[client] = in_flight + 1
        try:
            if scope["method"] in _BODY_METHODS:
                try:
                    _check_media_type(path, media_type(scope))
                    body = await self._read_body(scope, receive)
                except AgentError as error:
                    self._refused(scope, error, token)
                    # the rest of a refused body is not read: close rather than keep alive
                    response = error_response(path, error, connection="close")
                    await response(scope, receive, send_with_id)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        finally:
            left = self._in_flight[client] - 1
            if left > 0:
                self._in_flight[client] = left
            else:
                del self._in_flight[client]

    def _refused(self, scope: Scope, error: AgentError, token: str | None) -> None:
        if self._on_refusal is not None:
            self._on_refusal(scope, error, token)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, or RequestTooLarge / RequestTimeout before it is all read."""
        limit = self._limits.http_body_max
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(f"request body larger than {limit} bytes")
        if BODY_RECEIVED in scope.get("extensions", ()):  # no read can wait
            return await _receive_body(receive, limit)
        try:
            async with asyncio.timeout(self._limits.request_timeout):
                return await _receive_body(receive, limit)
        except TimeoutError:
            raise RequestTimeout(
                f"request body not received within {self._limits.request_timeout:g} s"
            ) from None

    def _authenticate(self, scope: Scope, accepted_digests: Sequence[str]) -> str:
        """The caller's identity (``token:`` and the start of the token's SHA-256, which the
        config holds), else ``TOKEN_ABSENT`` or ``TOKEN_WRONG``. Compared in constant time."""
        given = header(scope, b"authorization")
        if not given.lower().startswith("bearer "):
            return TOKEN_ABSENT
        digest = hashlib.sha256(given[7:].strip().encode()).hexdigest()
        for accepted in accepted_digests:
            if hmac.compare_digest(digest, accepted.lower()):
                return f"token:{digest[:12]}"
        return TOKEN_WRONG


async def _receive_body(receive: Receive, limit: int) -> bytes:
    """The whole body, or RequestTooLarge as soon as more than ``limit`` bytes came."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the route the body already read, then defers to the
    server's own (which reports the client going away)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
