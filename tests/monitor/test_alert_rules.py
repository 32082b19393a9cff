"""The Prometheus alert rules in deploy/prometheus/: valid, unit-tested by promtool, every
alert shown both firing and silent, and drift thresholds in step with the agent's own.

promtool ships with Debian's ``prometheus`` package; without it the promtool checks skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.monitor import MonitorConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "edge-agent.rules.yml"
RULE_TESTS = DEPLOY / "edge-agent.rules.test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian: apt-get install prometheus)",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60, check=False
    )


def _alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_scrape_config_passes_promtool_check() -> None:
    result = _promtool("check", "config", SCRAPE_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(_alerts())
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown silent"


def test_every_alert_has_severity_and_summary() -> None:
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_drift_thresholds_match_the_agent_defaults() -> None:
    """The alerts use the thresholds the status page uses to call a value "act"."""
    defaults = MonitorConfig()
    alerts = _alerts()
    for name in ("EdgeAgentFeatureDrift", "EdgeAgentOutputDrift"):
        thresholds = dict(re.findall(r"drift_(psi|js_distance) >= ([0-9.]+)", alerts[name]["expr"]))
        assert float(thresholds["psi"]) == defaults.psi_act, name
        assert float(thresholds["js_distance"]) == defaults.js_act, name
