"""The HTTP edge's own limits on the real process: body size (413) and a client that
stalls mid-body (408); the agent goes on serving after each."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_process import AgentProcess, demo_root, start_agent

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/deterioration/predict"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    def edit(config: dict[str, Any]) -> None:
        config["limits"] = {"http_body_max": 10_000, "request_timeout": 1.0}

    process = start_agent(demo_root(Path(tmp_path_factory.mktemp("limits")), edit))
    yield process
    assert process.stop() == 0, process.log_text()


def test_a_body_over_the_limit_is_refused_with_413(agent: AgentProcess) -> None:
    with agent.client() as client:
        response = client.post(
            PREDICT,
            content=b"{" + b" " * 20_000 + b"}",
            headers={"Content-Type": "application/fhir+json"},
        )
        assert client.get("/healthz").status_code == 200
    assert response.status_code == 413
    assert response.json()["issue"][0]["details"]["text"] == "request_too_large"


def test_a_stalled_body_is_answered_408(agent: AgentProcess) -> None:
    host, port = agent.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {PREDICT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/fhir+json\r\n"
            'Content-Length: 500\r\n\r\n{"resourceType":'.encode()
        )
        answer = b""
        while chunk := sock.recv(4096):  # the agent closes after a refused body
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request_timeout" in answer
    with agent.client() as client:
        assert client.get("/healthz").status_code == 200
