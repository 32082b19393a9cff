"""The HTTP edge's own limits on the real process: body size (413) and a client that
stalls mid-body (408); the agent goes on serving after each."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.limits import Limits
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


def _head(padding: int, body_length: int = 0) -> bytes:
    return (
        f"POST {PREDICT} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/fhir+json\r\n"
        f"X-Padding: {'p' * padding}\r\nContent-Length: {body_length}\r\nConnection: close\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("piece", [1024, 200_000], ids=["a kibibyte per write", "in one write"])
def test_a_request_head_over_the_limit_is_answered_431(agent: AgentProcess, piece: int) -> None:
    head = _head(Limits().http_header_max + 1)
    answer = agent.exchange([head[i : i + piece] for i in range(0, len(head), piece)])
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"connection: close" in answer.lower()
    with agent.client() as client:
        assert client.get("/healthz").status_code == 200


def test_body_bytes_do_not_count_toward_the_head_limit(agent: AgentProcess) -> None:
    """A head just under the cap and its body in one write, more than the cap together: the
    head passes and the body reaches the route (not JSON: 400)."""
    body = b" " * 9_000
    head = _head(Limits().http_header_max - 1_000, len(body))
    answer = agent.exchange([head + body])
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"bad_input" in answer


def test_a_forwarded_for_header_does_not_make_another_client(tmp_path: Path) -> None:
    """The per-client bound (and the audit log's caller) is the connection's address: an
    ``X-Forwarded-For`` header, even from loopback, names no other client."""

    def edit(config: dict[str, Any]) -> None:
        config["http"]["max_concurrent_per_client"] = 1
        config["limits"] = {"request_timeout": 30.0}

    agent = start_agent(demo_root(tmp_path, edit))
    host, port = agent.base_url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10) as held:
            held.sendall(_head(0, 500) + b"{")  # its body stalls: the slot stays taken
            with agent.client() as client:
                deadline = time.monotonic() + 10
                while client.get("/readyz").status_code != 429:
                    assert time.monotonic() < deadline, "the stalled request never took the slot"
                forwarded = client.get("/readyz", headers={"X-Forwarded-For": "10.9.9.9"})
        assert forwarded.status_code == 429
    finally:
        assert agent.stop() == 0, agent.log_text()
