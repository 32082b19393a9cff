"""Registry faults on the real `edge-agent serve` process: the registry disappears, is
slow, or serves a corrupt or truncated bundle. Each time the agent keeps serving the
installed version, /metrics counts the failed pull with its reason, and a good registry
afterwards moves it forward."""

from __future__ import annotations

import http.server
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agent_process import AgentProcess, start_agent
from tests.integration.reliability_support import (
    DEMO_KEY,
    FHIR,
    PATIENT_BUNDLE,
    PREDICT,
    config_path_root,
    metric,
    publish_to,
    reliability_root,
    served_version,
    wait_for,
    wat_bundle,
)
from tests.registry.registry_helpers import make_ca_and_server_cert, serve

pytestmark = pytest.mark.integration

ARCHIVE = "bundles/deterioration/deterioration-1.0.1.tar.gz"


def _quick_polls(config: dict[str, Any]) -> None:
    config["registries"][0].update(
        poll_interval=1.0, backoff_max=2.0, retries=0, retry_delay=0.0, timeout=1.0
    )


def _failures(client: httpx.Client, reason: str) -> float:
    text = client.get("/metrics").text
    return metric(text, "edge_agent_bundle_pull_failures_total", reason=reason) + metric(
        text, "edge_agent_bundle_verification_failures_total", reason=reason
    )


def _still_serving(client: httpx.Client) -> None:
    response = client.post(PREDICT, content=PATIENT_BUNDLE, headers=FHIR)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "1.0.0"
    assert client.get("/readyz").status_code == 200


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    process = start_agent(reliability_root(tmp_path, edit=_quick_polls))
    yield process
    assert process.stop() == 0, process.log_text()


def test_file_registry_gone_corrupt_or_truncated_keeps_serving(
    agent: AgentProcess, tmp_path: Path
) -> None:
    registry = config_path_root(tmp_path) / "registry"
    with agent.client() as client:
        assert served_version(client) == "1.0.0"

        # Unreachable: the share is unmounted (the folder is gone).
        registry.rename(registry.with_name("registry.away"))
        wait_for(lambda: _failures(client, "registry") >= 2, 15, "failed pulls counted")
        _still_serving(client)
        registry.with_name("registry.away").rename(registry)

        # Corrupt: 1.0.1 is announced, but its archive's bytes are not the ones signed.
        publish_to(registry, wat_bundle(tmp_path / "b101", "1.0.1", DEMO_KEY), DEMO_KEY)
        archive = registry / ARCHIVE
        good = archive.read_bytes()
        archive.write_bytes(good[:100] + bytes(b ^ 0xFF for b in good[100:200]) + good[200:])
        wait_for(lambda: _failures(client, "digest_mismatch") >= 1, 15, "corruption refused")
        _still_serving(client)

        # Truncated: half the archive (an interrupted copy).
        archive.write_bytes(good[: len(good) // 2])
        before = _failures(client, "digest_mismatch")
        wait_for(lambda: _failures(client, "digest_mismatch") > before, 15, "truncation refused")
        _still_serving(client)

        # Fixed: the next poll installs 1.0.1 and it serves.
        archive.write_bytes(good)
        wait_for(lambda: served_version(client) == "1.0.1", 15, "1.0.1 to serve")
        text = client.get("/metrics").text
    assert metric(text, "edge_agent_model_active_info", version="1.0.1") == 1.0
    assert metric(text, "edge_agent_model_active_info", version="1.0.0") == 0.0
    assert '"reason": "digest_mismatch"' in agent.log_text()


class _SlowFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, after ``server.delay[0]`` seconds per request (changeable live)."""

    def do_GET(self) -> None:
        time.sleep(self.server.delay[0])  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr log."""


def test_https_registry_slow_then_unreachable_keeps_serving(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    folder = tmp_path / "https-registry"
    delay = [0.0]
    handler = partial(_SlowFiles, directory=str(folder))
    with serve(handler, (cert, key), delay=delay) as url:  # type: ignore[arg-type]

        def https_registry(config: dict[str, Any]) -> None:
            _quick_polls(config)
            config["registries"][0].update(url=url, ca_file=str(ca))

        config_path = reliability_root(tmp_path, edit=https_registry)
        # The demo's signed registry files, served over https by a static server.
        (config_path_root(tmp_path) / "registry").rename(folder)
        agent = start_agent(config_path)
        try:
            with agent.client() as client:
                assert served_version(client) == "1.0.0"
                delay[0] = 3.0  # slower than the registry's 1 s timeout
                wait_for(lambda: _failures(client, "registry") >= 2, 20, "slow pulls counted")
                _still_serving(client)
        except BaseException:
            agent.stop()
            raise
    try:  # the server is gone: connection refused
        with agent.client() as client:
            before = _failures(client, "registry")
            wait_for(lambda: _failures(client, "registry") > before, 15, "refused pulls counted")
            _still_serving(client)
    finally:
        assert agent.stop() == 0, agent.log_text()


def test_a_garbled_index_signature_is_a_refused_pull_not_a_crash(tmp_path: Path) -> None:
    """index.json.sig is the one registry file no signature covers: whoever can write to
    the share controls its bytes. Found by fuzz/ (target ``bundle``): a non-ASCII
    signature string escaped base64 as ValueError instead of SignatureError, and the
    agent's first pull at start crashed it (exit 1: a crash loop under systemd)."""
    config = reliability_root(tmp_path, edit=_quick_polls)
    start_agent(config).stop()  # 1.0.0 installed in the store
    registry = config_path_root(tmp_path) / "registry"
    signature = registry / "index.json.sig"
    good = signature.read_text()
    signature.write_text(good.replace('"signature":"', '"signature":"\u036a'))
    agent = start_agent(config)  # the first pull is refused; the agent starts all the same
    try:
        with agent.client() as client:
            wait_for(lambda: _failures(client, "signature") >= 2, 15, "the refusals counted")
            _still_serving(client)
            publish_to(registry, wat_bundle(tmp_path / "b101", "1.0.1", DEMO_KEY), DEMO_KEY)
            wait_for(lambda: served_version(client) == "1.0.1", 15, "the repaired registry")
    finally:
        assert agent.stop() == 0, agent.log_text()
