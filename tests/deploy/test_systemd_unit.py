"""The shipped unit file, checked by systemd's own tools.

``systemd-analyze verify`` checks that the unit parses and that every command exists; the
agent is not installed where the tests run, so a copy is verified whose ExecStart points at
a stand-in executable in a temp folder (everything else byte for byte the same).
``systemd-analyze security --offline=yes`` scores the sandbox without loading the unit into
a running manager, so it works in a container whose PID 1 is not systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_unit_file import REPO, UNIT, unit_settings

from agent.limits import Limits

ROLE_DEFAULTS = REPO / "deploy" / "ansible" / "roles" / "edge_agent" / "defaults" / "main.yml"
ROLE_VARS = REPO / "deploy" / "ansible" / "roles" / "edge_agent" / "vars" / "main.yml"
EXPOSURE_MAX = 2.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (Debian: apt-get install -y systemd)",
)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    stand_in = tmp_path / "edge-agent"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = UNIT.read_text()
    exec_start = unit_settings(text)["ExecStart"][0]
    binary = exec_start.split()[0]
    copy = tmp_path / "edge-agent.service"
    copy.write_text(text.replace(f"ExecStart={binary} ", f"ExecStart={stand_in} ", 1))

    result = _analyze("verify", str(copy))

    assert result.returncode == 0, result.stderr
    assert "edge-agent.service" not in result.stderr, result.stderr


@needs_systemd_analyze
def test_unit_exposure_is_at_most_two() -> None:
    result = _analyze("security", "--offline=yes", str(UNIT))

    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= EXPOSURE_MAX, result.stdout


def test_unit_runs_what_the_role_installs() -> None:
    """ExecStart, config path, user and writable paths agree with the role's layout."""
    settings = unit_settings(UNIT.read_text())
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    fixed = yaml.safe_load(ROLE_VARS.read_text())

    assert settings["ExecStart"] == [
        f"{defaults['edge_agent_prefix']}/current/bin/edge-agent serve "
        f"--config {fixed['edge_agent_config_dir']}/agent.yaml"
    ]
    assert settings["User"] == [defaults["edge_agent_user"]]
    assert settings["Group"] == [defaults["edge_agent_group"]]
    writable = settings["ReadWritePaths"][0].split()
    assert writable == [
        f"{fixed['edge_agent_state_dir']}/store",
        f"-{fixed['edge_agent_spool_dir']}",
        fixed["edge_agent_log_dir"],
    ]


def test_unit_keeps_the_daemon_contract() -> None:
    """Type=notify with the watchdog the agent pings, SIGHUP reload, stop above the drain."""
    settings = unit_settings(UNIT.read_text())

    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert int(settings["WatchdogSec"][0]) > 0
    assert int(settings["TimeoutStopSec"][0]) > Limits().drain_timeout
    # wasmtime's JIT needs pages that become executable after being written (see the unit).
    assert settings["MemoryDenyWriteExecute"] == ["no"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["AmbientCapabilities"] == [""]
