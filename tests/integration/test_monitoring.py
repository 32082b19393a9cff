"""/metrics of the real agent after real traffic: lint-clean for promtool, and holding every
metric that the alert rules (deploy/prometheus/) and the dashboard (deploy/grafana/) query.

The agent is the demo, with a drift window small enough to fill, a site mapping that scores
an unlisted sex as missing (so unseen categories are counted), and its registry copied so that
the test can break it: first the index signature (a verification failure), then the index
itself (a pull failure). Traffic includes an out-of-range temperature and an unlisted sex. So
every series the rules and panels read has really been produced by the agent, failure
counters included.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.agent_process import REPO, AgentProcess, demo_root, start_agent
from tests.integration.monitoring_records import (
    NDJSON,
    PREDICT,
    Identity,
    ReferenceRow,
    celsius_read_as_fahrenheit,
    ndjson,
    reference_rows,
)
from tests.integration.monitoring_traffic import config_for_traffic, exercise_every_surface

pytestmark = pytest.mark.integration

RULES = REPO / "deploy" / "prometheus" / "edge-agent.rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "edge-agent.json"
PROMETHEUS_OWN = {"up"}  # recorded by Prometheus per target, not exported by the agent
METRIC_NAME = re.compile(r"\b(edge_agent_[a-z0-9_]+|up)\b(?!\s*\()")
NOBODY = Identity("Example", "Pat", "MRN-1", "1 Main Street", "Springfield", "00000")


@dataclass(frozen=True)
class Scrape:
    text: str
    samples: set[str]  # sample names with at least one series


def _config(registry: Path) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config_for_traffic(config)
        config["monitor"] = {"window_records": 20, "min_window_records": 10}
        config["registries"][0].update(
            url=registry.as_uri(), poll_interval=1, backoff_max=1, retries=0
        )

    return edit


def _scrape(agent: AgentProcess) -> Scrape:
    with agent.client() as client:
        text = client.get("/metrics").text
    samples = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return Scrape(text, samples)


def _wait_for_sample(agent: AgentProcess, name: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name in _scrape(agent).samples:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} did not appear within {timeout}s:\n{agent.log_text()}")


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    tmp = tmp_path_factory.mktemp("monitoring")
    registry = tmp / "registry"
    shutil.copytree(REPO / "fixtures" / "registry", registry)
    config_path = demo_root(tmp, _config(registry))
    mapping_path = config_path.parent / "mappings" / "demo-site.yaml"
    mapping = yaml.safe_load(mapping_path.read_text())
    mapping["features"]["sex"].update(unseen="missing", missing="median")
    mapping_path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    agent = start_agent(config_path)
    try:
        rows = reference_rows()
        exercise_every_surface(agent, rows[0], NOBODY, "not-a-number")
        unusual = [ReferenceRow(rows[1].values, "other"), celsius_read_as_fahrenheit(rows[2])]
        with agent.client() as client:
            response = client.post(
                PREDICT, content=ndjson(rows[3:33] + unusual), headers={"Content-Type": NDJSON}
            )
            assert response.status_code == 200, response.text
        # a registry whose index signature no longer verifies, then one without an index
        signature = registry / "index.json.sig"
        signature.write_bytes(signature.read_bytes().replace(b"A", b"B", 1))
        _wait_for_sample(agent, "edge_agent_bundle_verification_failures_total")
        (registry / "index.json").unlink()
        _wait_for_sample(agent, "edge_agent_bundle_pull_failures_total")
        yield _scrape(agent)
    finally:
        assert agent.stop() == 0, agent.log_text()


def _rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return found


def _metric_names(expressions: list[str]) -> set[str]:
    return {m for e in expressions for m in METRIC_NAME.findall(e)}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_metrics_pass_promtool_lint(scrape: Scrape) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=scrape.text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # not even a lint warning


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_queried_metric_is_exported(scrape: Scrape, source: str) -> None:
    expressions = _rule_expressions() if source == "rules" else _dashboard_expressions()
    names = _metric_names(expressions)
    assert len(names) >= 10  # the pattern does find them
    assert names - PROMETHEUS_OWN - scrape.samples == set()


def test_traffic_reached_every_intake_and_error_cause(scrape: Scrape) -> None:
    """The scrape is of an agent that did real work on every path, not an idle one."""
    intakes = set(re.findall(r'edge_agent_predictions_total\{intake="(\w+)"', scrape.text))
    assert intakes == {"http", "oip", "cds_hooks", "mllp", "drop_folder"}
    reasons = set(re.findall(r'edge_agent_errors_total\{[^}]*reason="(\w+)"', scrape.text))
    assert {"bad_input", "unmappable", "unknown_model"} <= reasons
    assert re.search(
        r'edge_agent_bundle_verification_failures_total\{[^}]*reason="signature"', scrape.text
    )
    assert re.search(r'edge_agent_bundle_pull_failures_total\{[^}]*reason="registry"', scrape.text)
