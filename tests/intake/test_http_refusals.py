"""Every refusal by the HTTP guard is counted and audited in the compact edge form: time,
request id, intake, the peer, the token's state (never the token), the route template
(never the path as sent), a configured model's name, the reason; no body, no HMAC.

The real guard and ``EdgeRefusals`` in front of route templates like the agent's, through
httpx's ASGI transport; the plane is scripted and writes to a real ``AuditLog`` so the
lines themselves are checked for what must not be in them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.audit import AuditLog, Retention
from agent.intake.http.config import HttpConfig
from agent.intake.http.guard import GuardMiddleware
from agent.intake.http.refusals import EdgeRefusals
from agent.limits import Limits
from agent.types import EdgeRefusal, IntakePath
from tests.support.plane import ScriptedPlane

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-value-never-logged"
TOKEN_ID = f"token:{hashlib.sha256(TOKEN.encode()).hexdigest()[:12]}"
AUTH = {"authorization": f"Bearer {TOKEN}"}
SECRET_PATH = "DoeJane-MRN004217"  # what an attacker might put in a URL
BODY_MARK = b"BODY-TEXT-NEVER-AUDITED"
FHIR = {"content-type": "application/fhir+json"}
LIMITS = Limits(http_body_max=1_000, request_timeout=0.2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class AuditPlane(ScriptedPlane):
    """Serves one configured model, ``demo``; writes edge refusals to a real audit log."""

    def __init__(self, audit: AuditLog) -> None:
        super().__init__(LIMITS)
        self.audit = audit

    def readiness(self) -> dict[str, str | None]:
        return {"demo": None}

    def audit_refusal(self, refusal: EdgeRefusal) -> None:
        super().audit_refusal(refusal)
        self.audit.record_refusal(refusal)


class Edge:
    def __init__(self, tmp_path: Path, config: HttpConfig, window: float = 60.0) -> None:
        self.path = tmp_path / "audit.jsonl"
        self.plane = AuditPlane(AuditLog(self.path, b"k" * 32, Retention(1_000_000)))
        self.gate = asyncio.Event()

        async def held(request: Request) -> Response:
            await self.gate.wait()
            return JSONResponse({})

        routes = [
            Route("/v1/models/{name}/predict", held, methods=["POST"]),
            Route("/v2/models/{name}/infer", held, methods=["POST"]),
            Route("/cds-services/{id}", held, methods=["POST"]),
            Route("/healthz", held),
        ]
        self.refusals = EdgeRefusals(self.plane, routes, window)
        self.app = Starlette(
            routes=routes,
            middleware=[
                Middleware(
                    GuardMiddleware,
                    settings=lambda: config,
                    limits=LIMITS,
                    on_refusal=self.refusals.refused,
                )
            ],
        )

    def client(self, peer: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    def lines(self) -> list[dict[str, Any]]:
        text = self.path.read_text()
        assert TOKEN not in text and SECRET_PATH not in text and BODY_MARK.decode() not in text
        assert "input_hmac" not in text and "outputs" not in text
        return [json.loads(line) for line in text.splitlines()]


def _authed() -> HttpConfig:
    return HttpConfig(bearer_token_sha256=[hashlib.sha256(TOKEN.encode()).hexdigest()])


@pytest.mark.parametrize(
    ("headers", "token"),
    [({}, "absent"), ({"authorization": f"Bearer {TOKEN}x"}, "wrong")],
    ids=["absent", "wrong"],
)
async def test_401_is_audited_with_the_token_state_never_the_token(
    tmp_path: Path, headers: dict[str, str], token: str
) -> None:
    edge = Edge(tmp_path, _authed())
    async with edge.client() as client:
        answer = await client.post(
            f"/v1/models/{SECRET_PATH}/predict",
            content=BODY_MARK,
            headers={**headers, **FHIR, "x-request-id": "req-401"},
        )
    assert answer.status_code == 401
    [entry] = edge.lines()
    assert entry.pop("time").startswith("20")
    assert entry == {
        "request_id": "req-401",
        "intake": "http",
        "caller": "127.0.0.1",
        "token": token,
        "route": "/v1/models/{name}/predict",
        "outcome": "unauthorized",
    }
    assert edge.plane.refusals == [(SECRET_PATH, "unauthorized")]  # labelled by the plane


async def test_413_names_the_accepted_token_and_a_configured_model(tmp_path: Path) -> None:
    edge = Edge(tmp_path, _authed())
    async with edge.client() as client:
        declared = await client.post(
            "/v1/models/demo/predict", content=BODY_MARK * 100, headers={**AUTH, **FHIR}
        )

        async def streamed() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield BODY_MARK

        unknown = await client.post(
            f"/v2/models/{SECRET_PATH}/infer",
            content=streamed(),
            headers={**AUTH, "content-type": "application/json"},
        )
    assert declared.status_code == unknown.status_code == 413
    first, second = edge.lines()
    assert first["token"] == second["token"] == TOKEN_ID
    assert (first["route"], first["model"], first["intake"]) == (
        "/v1/models/{name}/predict",
        "demo",
        "http",
    )
    assert (second["route"], second["intake"]) == ("/v2/models/{name}/infer", "oip")
    assert "model" not in second  # not a configured model: not written at all
    assert first["outcome"] == second["outcome"] == "request_too_large"
    assert len(first["request_id"]) == 32  # none given: the guard's own


async def test_415_and_an_unmatched_path_write_no_path_text(tmp_path: Path) -> None:
    edge = Edge(tmp_path, HttpConfig())
    async with edge.client() as client:
        wrong_type = await client.post(
            "/cds-services/demo-risk", content=BODY_MARK, headers={"content-type": "text/plain"}
        )
        nowhere = await client.post(
            f"/{SECRET_PATH}/x", content=BODY_MARK * 100, headers={"x-request-id": "a" * 65}
        )
    assert (wrong_type.status_code, nowhere.status_code) == (415, 413)
    cds, other = edge.lines()
    assert "token" not in cds  # no token is asked for
    assert (cds["route"], cds["model"], cds["intake"], cds["outcome"]) == (
        "/cds-services/{id}",
        "demo",
        "cds_hooks",
        "unsupported_media_type",
    )
    assert (other["route"], other["outcome"]) == ("unmatched", "request_too_large")
    assert other["request_id"] != "a" * 65 and len(other["request_id"]) == 32


async def test_408_for_a_stalled_body_is_audited(tmp_path: Path) -> None:
    edge = Edge(tmp_path, HttpConfig())
    stall = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield BODY_MARK
        await stall.wait()
        yield b""

    async with edge.client() as client:
        answer = await client.post("/v1/models/demo/predict", content=stalled(), headers=FHIR)
    stall.set()
    assert answer.status_code == 408
    [entry] = edge.lines()
    assert (entry["outcome"], entry["model"]) == ("request_timeout", "demo")


async def test_429_is_audited_for_the_client_over_its_bound(tmp_path: Path) -> None:
    edge = Edge(tmp_path, HttpConfig(max_concurrent_per_client=1))
    async with edge.client() as client:
        held = asyncio.create_task(client.post("/v1/models/demo/predict", headers=FHIR))
        for _ in range(100):
            await asyncio.sleep(0)  # let the first request enter the route
        throttled = await client.post("/v1/models/demo/predict", headers=FHIR)
        edge.gate.set()
        assert (await held).status_code == 200
    assert throttled.status_code == 429
    [entry] = edge.lines()
    assert (entry["outcome"], entry["route"], entry["caller"]) == (
        "throttled",
        "/v1/models/{name}/predict",
        "127.0.0.1",
    )


async def test_identical_refusals_within_the_window_are_one_entry_with_a_count(
    tmp_path: Path,
) -> None:
    """The first is written at once, the repeats at the window's end as one entry (with
    the first repeat's id); another peer, or another reason, is another kind. Every
    request is still counted."""
    edge = Edge(tmp_path, _authed())
    async with edge.client() as client, edge.client("10.0.0.9") as other:
        for n in range(50):
            await client.post("/v1/models/demo/predict", headers={"x-request-id": f"r{n}"})
        await other.post("/v1/models/demo/predict")
        await client.post("/v1/models/demo/predict", headers={"authorization": "Bearer x"})
        assert [r.count for r in edge.plane.audited] == [1, 1, 1]  # repeats held
        edge.refusals.flush()
    entries = edge.lines()
    assert [(e["caller"], e["token"], e.get("count")) for e in entries] == [
        ("127.0.0.1", "absent", None),
        ("10.0.0.9", "absent", None),
        ("127.0.0.1", "wrong", None),
        ("127.0.0.1", "absent", 49),
    ]
    assert (entries[0]["request_id"], entries[3]["request_id"]) == ("r0", "r1")
    assert len(edge.plane.refusals) == 52


async def test_a_window_closes_by_itself(tmp_path: Path) -> None:
    edge = Edge(tmp_path, _authed(), window=0.5)
    async with edge.client() as client:
        for _ in range(3):
            await client.post("/v1/models/demo/predict")
        deadline = asyncio.get_running_loop().time() + 5
        while len(edge.plane.audited) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await client.post("/v1/models/demo/predict")  # a new window: written at once
    assert [r.count for r in edge.plane.audited] == [1, 2, 1]
    assert [r.intake for r in edge.plane.audited] == [IntakePath.http] * 3
