"""The HTTP intake: an ASGI app (Starlette) in front of the scoring pipeline.

Routes: predict from FHIR or HL7 v2 (``/v1``), the Open Inference Protocol v2 for raw
feature vectors (``/v2``), health, readiness and Prometheus metrics. Every route that scores
builds a ``ScoreRequest`` and calls the pipeline; errors become FHIR OperationOutcomes (or
OIP error bodies) with the status chosen in ``http_errors``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.errors import (
    AgentError,
    RecordError,
    RequestTimeout,
    RequestTooLarge,
    UnsupportedMediaType,
)
from agent.intake.http.cds_hooks import CDS_ROUTES
from agent.intake.http.config import HttpConfig
from agent.intake.http.errors import operation_outcome, outcome_for, status_for
from agent.intake.http.oip import OIP_ROUTES
from agent.intake.http.openapi import document
from agent.intake.http.status_page import status_page
from agent.limits import Limits
from agent.outputs.prediction_json import prediction_json
from agent.outputs.riskassessment import risk_assessment
from agent.pipeline import ScoringPipeline
from agent.types import IntakePath, RecordFormat, ScoreRequest

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"

_MEDIA_TYPES: dict[str, RecordFormat] = {
    "application/fhir+json": RecordFormat.fhir_json,
    "application/json": RecordFormat.fhir_json,
    "application/fhir+ndjson": RecordFormat.fhir_ndjson,
    "application/ndjson": RecordFormat.fhir_ndjson,
    "application/x-ndjson": RecordFormat.fhir_ndjson,
    "x-application/hl7-v2+er7": RecordFormat.hl7v2,
    "application/hl7-v2+er7": RecordFormat.hl7v2,
    "application/hl7-v2": RecordFormat.hl7v2,
}


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, refused past ``limits.http_body_max`` bytes without reading the
    rest, or when it takes longer than ``limits.request_timeout`` to arrive."""
    limit = limits.http_body_max
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body larger than {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.request_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"request body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"request body not received within {limits.request_timeout:g} s"
        ) from None
    return b"".join(chunks)


def record_format(content_type: str | None) -> RecordFormat:
    media = (content_type or "").split(";")[0].strip().lower()
    try:
        return _MEDIA_TYPES[media]
    except KeyError:
        raise UnsupportedMediaType(
            f"content type {media or '(none)'!r} is not accepted; use one of "
            + ", ".join(sorted(_MEDIA_TYPES))
        ) from None


def _pipeline(request: Request) -> ScoringPipeline:
    pipeline: ScoringPipeline = request.app.state.pipeline
    return pipeline


def _error_response(error: AgentError) -> JSONResponse:
    return JSONResponse(outcome_for(error), status_code=status_for(error), media_type=FHIR_JSON)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    pipeline = _pipeline(request)
    models = {
        m.name: m.name in {s.name for s in pipeline.served_models()} for m in pipeline.config.models
    }
    ready = all(models.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "models": models},
        status_code=200 if ready else 503,
    )


async def metrics(request: Request) -> Response:
    registry = _pipeline(request).monitor.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


async def list_models(request: Request) -> Response:
    models = []
    for served in _pipeline(request).served_models():
        manifest = served.bundle.manifest
        models.append(
            {
                "name": manifest.name,
                "version": manifest.version,
                "bundle_digest": served.bundle.digest,
                "signer_keyid": served.bundle.signer_keyid,
                "inputs": [
                    f.model_dump(mode="json", exclude_defaults=True) for f in manifest.inputs
                ],
                "outputs": [
                    o.model_dump(mode="json", exclude_defaults=True) for o in manifest.outputs
                ],
            }
        )
    return JSONResponse({"models": models})


def _wants_fhir(request: Request) -> bool:
    if request.query_params.get("format") == "fhir":
        return True
    return FHIR_JSON in request.headers.get("accept", "")


def _as_of(request: Request) -> datetime | None:
    text = request.query_params.get("as_of")
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError("as_of must be an ISO 8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def predict(request: Request) -> Response:
    pipeline = _pipeline(request)
    model = request.path_params["name"]
    try:
        fmt = record_format(request.headers.get("content-type"))
        body = await read_body(request, pipeline.limits)
        score_request = ScoreRequest(
            model=model,
            body=body,
            format=fmt,
            intake=IntakePath.http,
            as_of=_as_of(request),
            caller=request.state.caller,
            request_id=request.state.request_id,
            explain=request.query_params.get("explain") == "true",
        )
    except AgentError as error:
        pipeline.count_refusal(model, IntakePath.http, error)
        return _error_response(error)
    try:
        if len(body) <= pipeline.limits.inline_score_max:
            predictions = pipeline.score(score_request)
        else:
            predictions = await run_in_threadpool(pipeline.score, score_request)
    except AgentError as error:  # already counted by the pipeline
        return _error_response(error)
    if _wants_fhir(request):
        risk_output = pipeline.risk_output(score_request.model)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        resources = [risk_assessment(p, risk_output, occurrence=now) for p in predictions]
        body_out: dict[str, Any] = (
            resources[0]
            if len(resources) == 1
            else {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in resources],
            }
        )
        return JSONResponse(body_out, media_type=FHIR_JSON)
    first = predictions[0]
    return JSONResponse(
        {
            "model": first.model,
            "version": first.version,
            "bundle_digest": first.bundle_digest,
            "predictions": [prediction_json(p, explain=score_request.explain) for p in predictions],
        }
    )


class GuardMiddleware:
    """Request ids, bearer-token authentication and a per-client concurrency bound.

    Pure ASGI rather than Starlette's BaseHTTPMiddleware, which runs every request through
    an extra task and memory streams: about 0.3 ms of CPU per request, 7 % of a FHIR
    predict (measured by bench/, docs/benchmarks.md)."""

    def __init__(self, app: ASGIApp, config: HttpConfig) -> None:
        self.app = app
        self._config = config
        self._in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        client = request.client.host if request.client else "unknown"
        request.state.request_id = request_id
        request.state.caller = client
        open_paths = request.url.path in (
            "/healthz",
            "/readyz",
            "/v2/health/live",
            "/v2/health/ready",
        )
        if self._config.auth_required and not open_paths:
            identity = self._authenticate(request)
            if identity is None:
                refusal = JSONResponse(
                    operation_outcome("a valid bearer token is required", code="login"),
                    status_code=401,
                    media_type=FHIR_JSON,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refusal(scope, receive, send)
                return
            request.state.caller = identity
        if self._in_flight[client] >= self._config.max_concurrent_per_client:
            throttled = JSONResponse(
                operation_outcome(
                    "too many concurrent requests from this client", code="throttled"
                ),
                status_code=429,
                media_type=FHIR_JSON,
            )
            await throttled(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        self._in_flight[client] += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._in_flight[client] -= 1
            if self._in_flight[client] <= 0:
                del self._in_flight[client]

    def _authenticate(self, request: Request) -> str | None:
        """The caller's identity (a token fingerprint), or None. Compared in constant time."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        digest = hashlib.sha256(header[7:].strip().encode()).hexdigest()
        for accepted in self._config.bearer_token_sha256:
            if hmac.compare_digest(digest, accepted.lower()):
                return f"token:{digest[:12]}"
        return None


def _unexpected(request: Request, exc: Exception) -> Response:
    """Last resort: a bug. Log the type only (a message could quote a record), answer 500."""
    log.error("unhandled error", extra={"error_type": type(exc).__name__})
    return JSONResponse(
        operation_outcome("internal error; the agent goes on serving", code="exception"),
        status_code=500,
        media_type=FHIR_JSON,
    )


def create_app(pipeline: ScoringPipeline, config: HttpConfig) -> Starlette:
    routes = [
        Route("/", status_page),
        Route("/openapi.json", openapi),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/models", list_models),
        Route("/v1/models/{name}/predict", predict, methods=["POST"]),
        *OIP_ROUTES,
        *CDS_ROUTES,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, config=config)],
        exception_handlers={Exception: _unexpected},
    )
    app.state.pipeline = pipeline
    return app
