"""The bundle store on a disk that fills up, on the real `edge-agent serve` process: a new
version cannot be installed, the installed one keeps serving, /metrics says why, and once
space comes back the new version goes live and survives a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agent_process import start_agent
from tests.integration.reliability_support import (
    DEMO_KEY,
    FHIR,
    PATIENT_BUNDLE,
    PREDICT,
    config_path_root,
    fill,
    metric,
    publish_to,
    reliability_root,
    served_version,
    small_tmpfs,
    wait_for,
    wat_bundle,
)

pytestmark = pytest.mark.integration


def _store_failures(client: httpx.Client) -> float:
    return metric(client.get("/metrics").text, "edge_agent_bundle_pull_failures_total")


def test_full_store_disk_keeps_the_installed_version_serving(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "16m") as disk:

        def on_small_disk(config: dict[str, Any]) -> None:
            config["store"]["root"] = str(disk / "store")
            config["registries"][0].update(poll_interval=1.0, backoff_max=2.0, retries=0)

        config = reliability_root(tmp_path, edit=on_small_disk)
        registry = config_path_root(tmp_path) / "registry"
        agent = start_agent(config)
        try:
            with agent.client() as client:
                assert served_version(client) == "1.0.0"
                filler = fill(disk)
                publish_to(registry, wat_bundle(tmp_path / "b101", "1.0.1", DEMO_KEY), DEMO_KEY)
                wait_for(lambda: _store_failures(client) >= 2, 20, "failed installs counted")
                text = client.get("/metrics").text
                response = client.post(PREDICT, content=PATIENT_BUNDLE, headers=FHIR)
                assert response.status_code == 200 and response.json()["version"] == "1.0.0"
                filler.unlink()  # space comes back
                wait_for(lambda: served_version(client) == "1.0.1", 20, "1.0.1 installed")
        finally:
            assert agent.stop() == 0, agent.log_text()
        assert metric(text, "edge_agent_bundle_pull_failures_total", reason="store") >= 1
        assert agent.process.returncode == 0
        again = start_agent(config)  # the store is consistent: it serves 1.0.1 at once
        try:
            with again.client() as client:
                assert served_version(client) == "1.0.1"
        finally:
            assert again.stop() == 0, again.log_text()
