"""Connections that never send a request, on the real process: thousands of idle plain
connections, and TLS connections that never begin their handshake. The agent holds no more
than its connection cap, closes them at the idle deadline, keeps ``/healthz`` fast and
scoring answered, and its memory flat (issue 18: 20,000 idle connections exhausted the
descriptors; 10,000 idle TLS connections took it to 5.7 GB)."""

from __future__ import annotations

import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from agent.limits import Limits
from tests.integration.agent_process import AgentProcess, demo_root, start_agent
from tests.integration.reliability_support import FHIR, PREDICT, rss_kib
from tests.registry.registry_helpers import make_ca_and_server_cert

pytestmark = pytest.mark.integration

FLOOD = 3_000  # idle connections opened (the test process's descriptor limit is 20,000)
CAP = Limits().http_connections_max  # as shipped
IDLE = 2.0  # seconds: the agent's http_idle_timeout in these tests
DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "fixtures" / "fhir" / "demo-patient-bundle.json"


def _limits(config: dict[str, Any]) -> None:
    config["limits"] = {"http_idle_timeout": IDLE}


def _open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections to the agent that send nothing."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the agent closed ``sock`` (non-blocking; the agent never writes to it)."""
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _wait_all_closed(sockets: list[socket.socket], timeout: float) -> int:
    """Polls until the agent has closed every socket or ``timeout``; how many it closed."""
    open_ = set(sockets)
    deadline = time.monotonic() + timeout
    while open_ and time.monotonic() < deadline:
        open_ = {s for s in open_ if not _closed_by_peer(s)}
        time.sleep(0.1)
    return len(sockets) - len(open_)


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _healthz_ms(agent: AgentProcess, count: int) -> list[float]:
    """Latency of ``/healthz`` on fresh connections (each must be admitted), in ms. One
    client asking to close after each answer: a client made per call spent about 40 ms of
    its own loading CA certificates, which a busy machine turned into a failed bound."""
    times = []
    with agent.client() as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.get("/healthz", headers={"Connection": "close"})
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
            assert response.headers["connection"] == "close"
    return times


def test_an_idle_connection_flood_is_capped_and_closed_while_healthz_stays_fast(
    tmp_path: Path,
) -> None:
    agent = start_agent(demo_root(tmp_path, _limits))
    try:
        pid = agent.process.pid
        port = int(agent.base_url.rsplit(":", 1)[1])
        with agent.client() as client:
            client.get("/healthz")
            rss_before = rss_kib(pid)
            flood = _open_idle(port, FLOOD)
            try:
                latencies = _healthz_ms(agent, 50)
                scored = client.post(PREDICT, content=DEMO_BUNDLE.read_bytes(), headers=FHIR)
                descriptors = _descriptors(pid)
                closed = _wait_all_closed(flood, IDLE * 2 + 5)
                rss_after = rss_kib(pid)
            finally:
                for sock in flood:
                    sock.close()
            assert client.get("/healthz").status_code == 200
        assert scored.status_code == 200
        assert statistics.median(latencies) < 100, latencies
        assert sorted(latencies)[int(len(latencies) * 0.95)] < 100, latencies
        assert descriptors < CAP + 100  # before: one per connection, 3,000 and more
        assert closed == FLOOD  # before: none (no deadline before a first request)
        assert rss_after - rss_before < 30 * 1024
    finally:
        assert agent.stop() == 0, agent.log_text()


def test_tls_connections_that_never_handshake_are_capped_and_cut(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")

    def edit(config: dict[str, Any]) -> None:
        _limits(config)
        config["http"]["tls_cert"] = str(cert)
        config["http"]["tls_key"] = str(key)

    agent = start_agent(demo_root(tmp_path, edit), ca=ca)
    try:
        pid = agent.process.pid
        port = int(agent.base_url.rsplit(":", 1)[1])
        _healthz_ms(agent, 5)
        rss_before = rss_kib(pid)
        flood = _open_idle(port, FLOOD // 2)
        try:
            latencies = _healthz_ms(agent, 20)
            with agent.client() as client:  # a body through TLS and the parser, scored
                scored = client.post(PREDICT, content=DEMO_BUNDLE.read_bytes(), headers=FHIR)
            rss_peak = rss_kib(pid)
            closed = _wait_all_closed(flood, IDLE * 2 + 5)
        finally:
            for sock in flood:
                sock.close()
        assert scored.status_code == 200, scored.text
        assert statistics.median(latencies) < 100, latencies
        # before: a 256 KiB TLS read buffer per connection for asyncio's 60 s handshake
        # bound, 1,500 of them about 450 MB; now at most http_tls_handshakes_max at once
        assert rss_peak - rss_before < 150 * 1024
        assert closed == FLOOD // 2
    finally:
        assert agent.stop() == 0, agent.log_text()


def test_a_request_head_sent_a_byte_at_a_time_is_cut_at_the_idle_deadline(
    tmp_path: Path,
) -> None:
    agent = start_agent(demo_root(tmp_path, _limits))
    try:
        port = int(agent.base_url.rsplit(":", 1)[1])
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            closed_after = None
            for byte in head:  # one byte every 0.2 s: 40 s for the whole head
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed_after = time.monotonic() - started
                    break
                sock.settimeout(0.2)
                try:
                    if sock.recv(1) == b"":
                        closed_after = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    closed_after = time.monotonic() - started
                    break
        # before: no deadline before a first request, the head trickled on for 40 s
        assert closed_after is not None and closed_after < IDLE * 2 + 1.5, closed_after
    finally:
        assert agent.stop() == 0, agent.log_text()
