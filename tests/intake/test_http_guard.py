"""The HTTP guard (request ids, bearer tokens, per-client concurrency) behaves the same as a
pure ASGI middleware as it did on Starlette's BaseHTTPMiddleware.

The benchmarks (docs/benchmarks.md) measured BaseHTTPMiddleware at ~0.3 ms of CPU per
request; these tests pin the guard's contract so the cheaper form changes nothing visible.
They drive the real GuardMiddleware in front of a small Starlette app through httpx's ASGI
transport (no pipeline needed: the guard knows nothing of scoring).
"""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.intake.http.app import GuardMiddleware
from agent.intake.http.config import HttpConfig

TOKEN = "bench-test-token"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _app(config: HttpConfig, gate: asyncio.Event | None = None) -> Starlette:
    async def whoami(request: Request) -> Response:
        if gate is not None:
            await gate.wait()
        return JSONResponse({"caller": request.state.caller, "id": request.state.request_id})

    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/whoami", whoami), Route("/boom", boom), Route("/healthz", healthz)],
        middleware=[Middleware(GuardMiddleware, settings=lambda: config)],
    )


def _client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_request_id_is_echoed_or_made_and_caller_is_the_client() -> None:
    async with _client(_app(HttpConfig())) as client:
        given = await client.get("/whoami", headers={"x-request-id": "abc-123"})
        made = await client.get("/whoami")
    assert given.headers["x-request-id"] == "abc-123" == given.json()["id"]
    assert (
        len(made.headers["x-request-id"]) == 32
        and made.json()["id"] == made.headers["x-request-id"]
    )
    assert given.json()["caller"] == "127.0.0.1"


async def test_bearer_token_required_except_on_health() -> None:
    config = HttpConfig(bearer_token_sha256=[hashlib.sha256(TOKEN.encode()).hexdigest()])
    async with _client(_app(config)) as client:
        refused = await client.get("/whoami")
        wrong = await client.get("/whoami", headers={"authorization": "Bearer nope"})
        health = await client.get("/healthz")
        allowed = await client.get("/whoami", headers={"authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == wrong.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert health.status_code == 200
    assert allowed.status_code == 200
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    assert allowed.json()["caller"] == f"token:{digest[:12]}"


async def test_concurrency_bound_per_client_and_released_after_errors() -> None:
    gate = asyncio.Event()
    app = _app(HttpConfig(max_concurrent_per_client=1), gate)
    async with _client(app) as client:
        with pytest.raises(RuntimeError):
            await client.get("/boom")  # a failing request must not keep its slot
        held = asyncio.create_task(client.get("/whoami"))
        for _ in range(100):
            await asyncio.sleep(0)  # let the first request enter the app
        throttled = await client.get("/whoami")
        gate.set()
        first = await held
        after = await client.get("/whoami")
    assert throttled.status_code == 429
    assert throttled.json()["resourceType"] == "OperationOutcome"
    assert first.status_code == after.status_code == 200
