"""``edge-agent models pull|rollback|list`` against the running agent, over its admin socket:
a new version is pulled and served at once, and a rollback is served at once."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.bundle.manifest import BundleManifest
from tests.integration.agent_process import REPO, AgentProcess, demo_root, start_agent

pytestmark = pytest.mark.integration

DEMO_KEY = REPO / "fixtures/keys/demo-publisher.key"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, check=False
    )


def publish_version(registry: Path, version: str, workdir: Path) -> None:
    """Re-version the demo bundle, sign it with the demo key and publish it to ``registry``."""
    bundle = workdir / f"deterioration-{version}"
    shutil.copytree(REPO / "fixtures/demo/build/deterioration", bundle)
    (bundle / "manifest.sig").unlink()
    manifest = BundleManifest.model_validate_json((bundle / "manifest.json").read_bytes())
    (bundle / "manifest.json").write_bytes(
        manifest.model_copy(update={"version": version}).canonical_bytes()
    )
    for step in (
        ("bundle", "sign", str(bundle), "--key", str(DEMO_KEY)),
        ("bundle", "publish", str(bundle), registry.as_uri(), "--key", str(DEMO_KEY)),
    ):
        result = cli(*step)
        assert result.returncode == 0, result.stderr


@pytest.fixture()
def agent(tmp_path: Path) -> Iterator[tuple[AgentProcess, Path]]:
    registry = tmp_path / "registry"
    shutil.copytree(REPO / "fixtures/registry", registry)

    def edit(config: dict[str, Any]) -> None:
        config["registries"][0]["url"] = registry.as_uri()
        config["registries"][0]["poll_interval"] = 3600  # only the operator pulls here

    process = start_agent(demo_root(tmp_path, edit))
    yield process, registry
    assert process.stop() == 0, process.log_text()


def served_version(agent: AgentProcess) -> str:
    with agent.client() as client:
        version: str = client.get("/v1/models").json()["models"][0]["version"]
        return version


def test_pull_and_rollback_act_on_the_running_agent(
    agent: tuple[AgentProcess, Path], tmp_path: Path
) -> None:
    process, registry = agent
    config = str(process.config_path)
    socket_file = process.root / "var/demo/store/admin.sock"
    assert stat.S_IMODE(socket_file.stat().st_mode) == 0o600
    assert served_version(process) == "1.0.0"

    publish_version(registry, "1.0.1", tmp_path)
    pulled = cli("models", "pull", "--config", config)
    assert pulled.returncode == 0, pulled.stderr
    assert "deterioration: installed 1.0.1" in pulled.stdout
    assert served_version(process) == "1.0.1"

    rolled = cli("models", "rollback", "--config", config, "deterioration")
    assert rolled.returncode == 0, rolled.stderr
    assert "active version is now 1.0.0 (serving it now)" in rolled.stdout
    assert served_version(process) == "1.0.0"

    listed = cli("models", "list", "--config", config)
    assert "deterioration: *1.0.0 1.0.1  (serving 1.0.0)" in listed.stdout

    # an operator's rollback sticks: the next pull does not bring 1.0.1 back
    again = cli("models", "pull", "--config", config)
    assert again.returncode == 0 and served_version(process) == "1.0.0"

    unknown = cli("models", "rollback", "--config", config, "deterioration", "9.9.9")
    assert unknown.returncode == 2 and "error" in unknown.stderr


def test_admin_socket_refuses_garbage_and_keeps_serving(agent: tuple[AgentProcess, Path]) -> None:
    import socket

    process, _ = agent
    path = process.root / "var/demo/store/admin.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(b"not json\n")
        reply = json.loads(sock.recv(4096))
    assert reply["ok"] is False and reply["error"] is True
    assert served_version(process) == "1.0.0"
