"""``edge-agent config check`` loads each model's mapping against its bundle (the store's,
or the newest a registry offers, pulled into a scratch store and never installed), so a
mapping that cannot bind its model is refused before the agent starts, naming the file, the
line and the feature; and the running agent says the same at /readyz and in its log."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_process import demo_root, start_agent

pytestmark = pytest.mark.integration


def _local_site(config: dict[str, Any]) -> None:
    """The demo agent bound to the local-codes mapping, whose creatinine arrives in mg/dL."""
    config["models"][0]["mapping"] = "mappings/local-site.yaml"


def _without_molar_mass(config_path: Path) -> Path:
    mapping = config_path.parent / "mappings" / "local-site.yaml"
    text = mapping.read_text()
    assert "    molar_mass: 113.12" in text
    kept = [line for line in text.splitlines() if not line.startswith("    molar_mass:")]
    mapping.write_text("\n".join(kept) + "\n")
    return mapping


def _check(config_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "config", "check", str(config_path), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_mapping_that_fits_is_checked_against_the_registry_bundle(tmp_path: Path) -> None:
    config_path = demo_root(tmp_path)
    result = _check(config_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deterioration 1.0.0 (from registry demo): the mapping binds all its inputs" in (
        result.stdout
    )
    assert not list((config_path.parent / "../var/demo/store").glob("versions/*/*"))


def test_a_mapping_without_its_molar_mass_fails_the_check_naming_line_and_feature(
    tmp_path: Path,
) -> None:
    config_path = demo_root(tmp_path, _local_site)
    mapping = _without_molar_mass(config_path)
    result = _check(config_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{mapping.name}:" in result.stdout and "'creatinine'" in result.stdout
    assert "molar" in result.stdout
    offline = _check(config_path, "--offline")  # nothing installed: nothing to check against
    assert offline.returncode == 0 and "checked when one arrives" in offline.stdout


def test_the_agent_says_which_mapping_line_blocks_the_model(tmp_path: Path) -> None:
    config_path = demo_root(tmp_path, _local_site)
    _without_molar_mass(config_path)
    agent = start_agent(config_path, up_path="/healthz")
    try:
        with agent.client() as client:
            deadline = time.monotonic() + 30
            while "site mapping does not fit" not in agent.log_text():
                assert time.monotonic() < deadline, agent.log_text()
                time.sleep(0.1)
            ready = client.get("/readyz")
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert ready.status_code == 503
    assert "'creatinine'" in ready.json()["unavailable"]["deterioration"]
    line = next(x for x in agent.log_text().splitlines() if "site mapping does not fit" in x)
    assert "local-site.yaml:" in line and "'creatinine'" in line and "molar_mass" in line
