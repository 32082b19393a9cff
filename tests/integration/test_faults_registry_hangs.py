"""Registries that never answer, on the real `edge-agent serve` process: every outside read
is bounded in time and none blocks start-up, an operator's pull or shutdown.

A FIFO in a file registry stands for what is not a file (opening it would wait for a
writer forever); https registries that accept a connection and never answer stand for a
hung server. The agent must be ready at once with the versions its store holds, answer
`models pull` within its deadline, and stop within its drain bound."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.agent_process import AgentProcess, start_agent
from tests.integration.reliability_support import (
    config_path_root,
    metric,
    reliability_root,
    served_version,
    wait_for,
)

pytestmark = pytest.mark.integration

DRAIN = 5.0  # seconds: reliability_root's drain_timeout


def _models_pull(agent: AgentProcess) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "models", "pull", "--config", str(agent.config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result, time.monotonic() - started


def _stop_within_the_drain_bound(agent: AgentProcess) -> None:
    started = time.monotonic()
    code = agent.stop(signal.SIGTERM, timeout=60)
    elapsed = time.monotonic() - started
    assert code == 0, agent.log_text()
    assert elapsed < DRAIN + 6, f"SIGTERM took {elapsed:.1f} s"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def test_a_fifo_in_a_file_registry_blocks_neither_start_nor_pull_nor_stop(
    tmp_path: Path,
) -> None:
    def quick(config: dict[str, Any]) -> None:
        config["registries"][0].update(poll_interval=1.0, backoff_max=2.0, retries=0)

    config_path = reliability_root(tmp_path, edit=quick)
    start_agent(config_path).stop()  # 1.0.0 installed
    index = config_path_root(tmp_path) / "registry/index.json"
    index.unlink()
    os.mkfifo(index)

    agent = start_agent(config_path, ready_timeout=20)
    try:
        with agent.client() as client:
            assert served_version(client) == "1.0.0"
            wait_for(
                lambda: (
                    metric(
                        client.get("/metrics").text,
                        "edge_agent_bundle_pull_failures_total",
                        reason="registry",
                    )
                    >= 2
                ),
                15,
                "refused polls counted (polling goes on)",
            )
        pulled, seconds = _models_pull(agent)
        assert pulled.returncode == 1 and "failed" in pulled.stdout + pulled.stderr, pulled
        assert seconds < 20
    except BaseException:
        agent.stop(signal.SIGKILL)
        raise
    _stop_within_the_drain_bound(agent)
    assert "registry index refused or unreachable" in agent.log_text()


def _with_hung_registries(tmp_path: Path, port: int, **limits: float) -> Path:
    """The demo agent with 1.0.0 installed, then three https registries added that accept
    connections and never answer (default timeout and retries: minutes each)."""
    config_path = reliability_root(tmp_path)
    start_agent(config_path).stop()  # 1.0.0 installed from the file registry
    config = yaml.safe_load(config_path.read_text())
    config["registries"][0]["poll_interval"] = 3600
    for n in range(3):
        config["registries"].append({"name": f"hung-{n}", "url": f"https://127.0.0.1:{port}/r{n}"})
    config["limits"].update(limits)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def test_https_registries_that_never_answer_hold_nothing_down(
    tmp_path: Path, silent_server: int
) -> None:
    agent = start_agent(_with_hung_registries(tmp_path, silent_server), ready_timeout=20)
    try:
        with agent.client() as client:
            assert served_version(client) == "1.0.0"
    except BaseException:
        agent.stop(signal.SIGKILL)
        raise
    _stop_within_the_drain_bound(agent)  # while the first pulls still hang


def test_models_pull_answers_within_its_deadline(tmp_path: Path, silent_server: int) -> None:
    config_path = _with_hung_registries(tmp_path, silent_server, pull_timeout=3.0)
    agent = start_agent(config_path, ready_timeout=20)
    try:
        pulled, seconds = _models_pull(agent)
        assert pulled.returncode == 1, pulled
        assert "did not finish within 3 s" in pulled.stderr, pulled
        assert seconds < 15
        with agent.client() as client:
            assert client.get("/readyz").status_code == 200
    except BaseException:
        agent.stop(signal.SIGKILL)
        raise
    _stop_within_the_drain_bound(agent)
