"""Every HTTP route that takes a body, driven in process through Starlette's ASGI app (the
integration tests drive the same routes on the real process): an oversize body is refused
413 and a stalled one 408 by the one guard, before anything is parsed or scored, each in
the body shape of the route's protocol; a good body reaches the data plane once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agent.intake.http.app import create_app
from agent.intake.http.config import HttpConfig
from agent.limits import Limits
from agent.types import FeatureVector, Prediction, ScoreRequest
from tests.support.plane import ScriptedPlane

pytestmark = pytest.mark.anyio
LIMITS = Limits(http_body_max=1_000, request_timeout=0.3)
PATIENT = {"resourceType": "Patient", "id": "p1"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Plane(ScriptedPlane):
    def predict(self, request: ScoreRequest) -> list[Prediction]:
        vector = FeatureVector(values=(1.0,), features=())
        return [
            Prediction(
                request.model,
                self.version,
                self.digest,
                {"risk": 0.25},
                vector,
                "Patient/p1",
                subject={"reference": "Patient/p1"},
            )
        ]

    def predict_rows(self, rows: Sequence[Sequence[float]]) -> list[dict[str, float]]:
        return [{"risk": 0.25} for _ in rows]


ROUTES: list[tuple[str, str, bytes]] = [
    ("/v1/models/demo/predict", "application/fhir+json", json.dumps(PATIENT).encode()),
    (
        "/cds-services/demo-risk",
        "application/json",
        json.dumps(
            {
                "hook": "patient-view",
                "hookInstance": "h",
                "context": {"patientId": "p1"},
                "prefetch": {"patient": PATIENT},
            }
        ).encode(),
    ),
]


def _client(plane: Plane) -> httpx.AsyncClient:
    app = create_app(plane, HttpConfig, CollectorRegistry())
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def _stalled(first: bytes) -> AsyncIterator[bytes]:
    yield first
    await asyncio.sleep(5)  # never sends the rest
    yield b"}"


@pytest.mark.parametrize(("path", "media", "_body"), ROUTES)
async def test_oversize_body_is_413_before_anything_is_parsed(
    path: str, media: str, _body: bytes
) -> None:
    plane = Plane(LIMITS, keep_requests=True)
    async with _client(plane) as client:
        declared = await client.post(path, content=b"x" * 2_000, headers={"Content-Type": media})

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(4):
                yield b"x" * 400

        streamed = await client.post(path, content=chunks(), headers={"Content-Type": media})
    assert declared.status_code == streamed.status_code == 413
    assert "request_too_large" in declared.text and "request_too_large" in streamed.text
    assert plane.requests == []
    assert [reason for _, reason in plane.refusals] == ["request_too_large"] * 2


@pytest.mark.parametrize(("path", "media", "_body"), ROUTES)
async def test_stalled_body_is_408_before_anything_is_parsed(
    path: str, media: str, _body: bytes
) -> None:
    plane = Plane(LIMITS, keep_requests=True)
    async with _client(plane) as client:
        response = await client.post(
            path, content=_stalled(b'{"resourceType":'), headers={"Content-Type": media}
        )
    assert response.status_code == 408
    assert plane.requests == [] and plane.refusals == [("demo", "request_timeout")]


@pytest.mark.parametrize("path", ["/v2/models/demo/infer", "/v2/models/demo/versions/1.0.0/infer"])
async def test_oip_infer_is_guarded_too(path: str) -> None:
    plane = Plane(LIMITS, keep_requests=True)
    async with _client(plane) as client:
        oversize = await client.post(path, content=b"[" * 2_000)
        stalled = await client.post(path, content=_stalled(b'{"inputs":'))
    assert (oversize.status_code, stalled.status_code) == (413, 408)
    assert oversize.json()["reason"] == "request_too_large"  # the OIP error shape
    assert [reason for _, reason in plane.refusals] == ["request_too_large", "request_timeout"]


@pytest.mark.parametrize(("path", "media", "body"), ROUTES)
async def test_a_good_body_reaches_the_data_plane_once(path: str, media: str, body: bytes) -> None:
    plane = Plane(LIMITS, keep_requests=True)
    async with _client(plane) as client:
        response = await client.post(path, content=body, headers={"Content-Type": media})
    assert response.status_code == 200, response.text
    [request] = plane.requests
    assert request.model == "demo" and (request.body == body or not path.startswith("/v1"))


async def test_a_wrong_media_type_is_415_before_the_body_is_read() -> None:
    plane = Plane(LIMITS, keep_requests=True)
    async with _client(plane) as client:
        response = await client.post(
            ROUTES[0][0], content=b"{}", headers={"Content-Type": "text/plain"}
        )
    assert response.status_code == 415 and plane.requests == []


@pytest.mark.parametrize(
    ("query", "explain"),
    [
        ("explain=true", True),
        ("explain=true&explain=false", False),
        ("explain=0&explain=true", True),
    ],
)
async def test_predict_reads_a_query_parameter_last_value_as_starlette_does(
    query: str, explain: bool
) -> None:
    plane = Plane(LIMITS, keep_requests=True)
    async with _client(plane) as client:
        response = await client.post(
            f"{ROUTES[0][0]}?as_of=2026-03-15T12:00:00Z&{query}",
            content=ROUTES[0][2],
            headers={"Content-Type": ROUTES[0][1]},
        )
    assert response.status_code == 200, response.text
    [request] = plane.requests
    assert request.explain is explain and request.as_of is not None


async def test_predict_reads_a_header_first_value_and_answers_fhir_when_asked() -> None:
    plane = Plane(LIMITS, keep_requests=True)
    headers = [
        ("Content-Type", "application/fhir+json"),
        ("Content-Type", "text/plain"),
        ("Accept", "application/fhir+json"),
        ("Accept", "application/json"),
    ]
    async with _client(plane) as client:
        answer = await client.post(ROUTES[0][0], content=ROUTES[0][2], headers=headers)
        plain = await client.post(ROUTES[0][0], content=ROUTES[0][2], headers=headers[:2])
    assert answer.status_code == 200 and answer.json()["resourceType"] == "RiskAssessment"
    assert answer.headers["content-type"] == "application/fhir+json"
    assert plain.headers["content-type"] == "application/json" and plain.json()["scored"] == 1


async def test_a_request_id_that_is_not_a_short_token_is_replaced() -> None:
    async with _client(Plane(LIMITS, keep_requests=True)) as client:
        kept = await client.get("/healthz", headers={"X-Request-Id": "abc-123.x_Y"})
        long = await client.get("/healthz", headers={"X-Request-Id": "a" * 65})
        text = await client.get("/healthz", headers={"X-Request-Id": "Jane Doe MRN 4711"})
    assert kept.headers["x-request-id"] == "abc-123.x_Y"
    for response in (long, text):
        new: Any = response.headers["x-request-id"]
        assert len(new) == 32 and new.isalnum()


@pytest.mark.parametrize(
    ("path", "status", "media"),
    [
        ("/healthz", 200, "application/json"),
        ("/readyz", 200, "application/json"),
        ("/v2/health/live", 200, "application/json"),
        ("/v2/health/ready", 200, "application/json"),
        ("/v1/models", 200, "application/json"),
        ("/cds-services", 200, "application/json"),
        ("/openapi.json", 200, "application/json"),
        ("/metrics", 200, "text/plain"),
        ("/", 200, "text/html"),
        ("/v2/models/demo/ready", 200, "application/json"),
        ("/v2/models/demo/versions/9.9.9/ready", 404, "application/json"),
    ],
)
async def test_every_get_route_answers_in_process(path: str, status: int, media: str) -> None:
    async with _client(Plane(LIMITS)) as client:
        response = await client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(media)
    assert response.headers["x-request-id"]


async def test_outcomes_route_reaches_the_data_plane_and_refuses_bad_entries() -> None:
    async with _client(Plane(LIMITS)) as client:
        good = await client.post(
            "/v1/models/demo/outcomes", json={"outcomes": [{"patient": "Patient/p1", "label": 1}]}
        )
        bad = await client.post("/v1/models/demo/outcomes", json={"outcomes": [{"label": 1}]})
    assert good.json() == {"received": 1, "joined": 0}
    assert bad.status_code == 400 and "outcomes[0].patient" in bad.text
