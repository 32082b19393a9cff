"""The HTTP intake: an ASGI app (Starlette) in front of the data plane.

Routes: predict from FHIR or HL7 v2 (``/v1``, ``predict.py``), the Open Inference Protocol v2
for raw feature vectors (``/v2``, ``oip.py``), CDS Hooks (``cds_hooks.py``), health,
readiness, the model list, Prometheus metrics, the status page and the OpenAPI document.
Every route sits behind the one guard (``guard.py``: request ids, auth, concurrency, body
cap and deadline, content types) and knows the agent only as a ``DataPlane``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.dataplane import DataPlane
from agent.errors import InternalError
from agent.intake.http.cds_hooks import CDS_ROUTES
from agent.intake.http.config import HttpConfig
from agent.intake.http.errors import error_response
from agent.intake.http.guard import GuardMiddleware
from agent.intake.http.oip import OIP_ROUTES
from agent.intake.http.openapi import document
from agent.intake.http.outcomes import post_outcomes
from agent.intake.http.predict import plane_of, predict
from agent.intake.http.refusals import EdgeRefusals, route_of
from agent.intake.http.status_page import status_page

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when every configured model serves; else 503 saying which does not, and why."""
    readiness = plane_of(request).readiness()
    ready = all(reason is None for reason in readiness.values())
    return JSONResponse(
        {
            "status": "ready" if ready else "not ready",
            "models": {name: reason is None for name, reason in readiness.items()},
            "unavailable": {name: why for name, why in readiness.items() if why is not None},
        },
        status_code=200 if ready else 503,
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


async def list_models(request: Request) -> Response:
    models = []
    for model in plane_of(request).models():
        manifest = model.manifest
        models.append(
            {
                "name": model.name,
                "version": model.version,
                "bundle_digest": model.digest,
                "signer_keyid": model.signer_keyid,
                "inputs": [
                    f.model_dump(mode="json", exclude_defaults=True) for f in manifest.inputs
                ],
                "outputs": [
                    o.model_dump(mode="json", exclude_defaults=True) for o in manifest.outputs
                ],
                "metrics": dict(manifest.provenance.metrics),  # the publisher's own figures
                "card": manifest.card.model_dump(mode="json") if manifest.card else None,
            }
        )
    return JSONResponse({"models": models})


def create_app(
    plane: DataPlane, settings: Callable[[], HttpConfig], registry: CollectorRegistry
) -> Starlette:
    """The app; ``settings`` gives the HTTP section as it stands (the guard reads it per
    request: a reload rotates tokens), ``registry`` is what ``/metrics`` exposes."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def unexpected(request: Request, exc: Exception) -> Response:
        """Last resort: a bug at the edge. Counted as ``internal``, logged once with the
        request id (the type only: a message could quote a record), answered 500 with
        that id so the line can be found."""
        request_id = getattr(request.state, "request_id", "")
        log.error(
            "unhandled error", extra={"error_type": type(exc).__name__, "request_id": request_id}
        )
        error = InternalError(f"unexpected error; request id {request_id}")
        plane.count_refusal(*route_of(request.url.path), error)
        return error_response(request.url.path, error)

    routes = [  # matched in order, one pattern after another: the busiest route first
        Route("/v1/models/{name}/predict", predict, methods=["POST"], name="predict"),
        Route("/", status_page),
        Route("/openapi.json", openapi),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/models", list_models),
        Route("/v1/models/{name}/outcomes", post_outcomes, methods=["POST"]),
        *OIP_ROUTES,
        *CDS_ROUTES,
    ]
    refusals = EdgeRefusals(plane, routes, plane.limits.audit_refusal_window)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                GuardMiddleware,
                settings=settings,
                limits=plane.limits,
                on_refusal=refusals.refused,
            )
        ],
        exception_handlers={Exception: unexpected},
    )
    app.state.plane = plane
    app.state.refusals = refusals
    return app


def edge_refusals(app: Starlette) -> EdgeRefusals:
    """The app's record of what its edge refuses: the listener reports its 431s there, and
    the daemon flushes it once the server has stopped."""
    refusals: EdgeRefusals = app.state.refusals
    return refusals
