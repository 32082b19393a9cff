"""/metrics of the real agent after real traffic: lint-clean for promtool, holding every
metric that the alert rules (deploy/prometheus/) and the dashboard (deploy/grafana/) query,
and read by a real Prometheus that runs the dashboard's queries and evaluates the rules.

The agent is the demo, with a site mapping that scores an unlisted sex as missing (so unseen
categories are counted) and its registry copied so that the test can break it: first the
index signature (a verification failure), then the index itself (a pull failure). Traffic
goes through every surface, then fills the drift window with reference records whose
temperature is in degF labelled Cel, plus an unlisted sex. So every series the rules and
panels read has really been produced by the agent, failure counters included.

Prometheus (Debian's ``prometheus`` package, which also brings promtool) scrapes the agent
every second while this happens; without it those tests skip.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.agent_process import (
    REPO,
    AgentProcess,
    demo_root,
    flag_out_of_range,
    free_port,
    start_agent,
)
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
OUTCOMES = "/v1/models/deterioration/outcomes"
WINDOW = 200  # drift window: at 200 records, no unshifted feature reaches "act" by chance
# what the dashboard's variables stand for when a query is run outside Grafana
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$model": ".*"}
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed (apt-get install prometheus)",
)


@dataclass(frozen=True)
class Scrape:
    text: str
    samples: set[str]  # sample names with at least one series


@dataclass(frozen=True)
class Monitored:
    scrape: Scrape  # /metrics after all the traffic
    prometheus: str | None  # base URL of a Prometheus scraping the agent, if installed


def _config(registry: Path) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config_for_traffic(config)
        config["monitor"] = {"window_records": WINDOW, "min_window_records": WINDOW // 2}
        config["performance"] = {"enabled": True, "min_labelled": 10}
        config["registries"][0].update(
            url=registry.as_uri(), poll_interval=1, backoff_max=1, retries=0
        )

    return edit


def _scrape(agent: AgentProcess) -> Scrape:
    with agent.client() as client:
        text = client.get("/metrics").text
    samples = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return Scrape(text, samples)


@contextmanager
def _prometheus(tmp: Path, target: str) -> Iterator[str | None]:
    """A Prometheus scraping ``target`` every second with the rules under test; None when
    Prometheus is not installed."""
    if shutil.which("prometheus") is None:
        yield None
        return
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "edge-agent", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200, "Prometheus")
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    assert response.status_code == 200, (expr, response.text)
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    tmp = tmp_path_factory.mktemp("monitoring")
    registry = tmp / "registry"
    shutil.copytree(REPO / "fixtures" / "registry", registry)
    config_path = demo_root(tmp, _config(registry))
    flag_out_of_range(config_path, "body_temperature")  # the degF mix-up shows as drift
    mapping_path = config_path.parent / "mappings" / "demo-site.yaml"
    mapping = yaml.safe_load(mapping_path.read_text())
    mapping["features"]["sex"].update(unseen="missing", missing="median")
    mapping_path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    http = yaml.safe_load(config_path.read_text())["http"]
    # Prometheus first: its service discovery takes about 5 s to hand it the target
    with _prometheus(tmp, f"{http['host']}:{http['port']}") as prometheus:
        agent = start_agent(config_path)
        try:
            rows = reference_rows()
            exercise_every_surface(agent, rows[0], NOBODY, "not-a-number")
            shifted = [celsius_read_as_fahrenheit(r) for r in rows[1 : WINDOW + 1]]
            with agent.client() as client:
                response = client.post(
                    PREDICT,
                    content=ndjson([ReferenceRow(rows[0].values, "other"), *shifted]),
                    headers={"Content-Type": NDJSON},
                )
                assert response.status_code == 200, response.text
                # their outcomes, later: the live performance series
                scored = [p["patient"] for p in response.json()["predictions"] if "outputs" in p]
                when = response.json()["as_of"]  # the outcome follows the score it labels
                outcomes = [
                    {"patient": r, "label": i % 2, "time": when} for i, r in enumerate(scored)
                ]
                joined = client.post(OUTCOMES, json={"outcomes": outcomes})
                assert joined.json()["joined"] == len(outcomes) >= 10, joined.text
            # a registry whose index signature no longer verifies, then one without an index
            _break_signature(registry / "index.json.sig")
            _wait(lambda: _has(agent, "edge_agent_bundle_verification_failures_total"), "refusal")
            (registry / "index.json").unlink()
            _wait(lambda: _has(agent, "edge_agent_bundle_pull_failures_total"), "pull failure")
            if prometheus is not None:  # two scrapes since: every series seen, rates defined
                now = time.time()
                _wait(lambda: _scrapes_since(prometheus, now) >= 2, "two more scrapes")
            yield Monitored(_scrape(agent), prometheus)
        finally:
            assert agent.stop() == 0, agent.log_text()


def _break_signature(path: Path) -> None:
    """Flip one bit of the Ed25519 signature in the registry's detached signature file."""
    document = json.loads(path.read_text())
    signature = bytearray(base64.b64decode(document["signature"]))
    signature[0] ^= 1
    document["signature"] = base64.b64encode(bytes(signature)).decode()
    path.write_text(json.dumps(document))


def _has(agent: AgentProcess, sample: str) -> bool:
    return sample in _scrape(agent).samples


def _scrapes_since(prometheus: str, moment: float) -> int:
    """How many times Prometheus scraped the agent after ``moment`` (Unix time); the first
    scrape can come seconds after the agent starts, while service discovery settles."""
    seconds = max(1, int(time.time() - moment) + 1)
    samples = _query(prometheus, f"up[{seconds}s]")
    return sum(1 for r in samples for stamp, _up in r.get("values", []) if float(stamp) > moment)


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
def test_metrics_pass_promtool_lint(monitored: Monitored) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=monitored.scrape.text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # not even a lint warning


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_queried_metric_is_exported(monitored: Monitored, source: str) -> None:
    expressions = _rule_expressions() if source == "rules" else _dashboard_expressions()
    names = _metric_names(expressions)
    assert len(names) >= 10  # the pattern does find them
    assert names - PROMETHEUS_OWN - monitored.scrape.samples == set()


def test_traffic_reached_every_intake_and_error_cause(monitored: Monitored) -> None:
    """The scrape is of an agent that did real work on every path, not an idle one."""
    scrape = monitored.scrape
    intakes = set(re.findall(r'edge_agent_predictions_total\{intake="(\w+)"', scrape.text))
    assert intakes == {"http", "oip", "cds_hooks", "mllp", "drop_folder"}
    reasons = set(re.findall(r'edge_agent_errors_total\{[^}]*reason="(\w+)"', scrape.text))
    assert {"bad_input", "missing", "unknown_model"} <= reasons
    assert re.search(
        r'edge_agent_bundle_verification_failures_total\{[^}]*reason="signature"', scrape.text
    )
    assert re.search(r'edge_agent_bundle_pull_failures_total\{[^}]*reason="registry"', scrape.text)


@needs_prometheus
def test_every_dashboard_query_runs_and_returns_series(monitored: Monitored) -> None:
    assert monitored.prometheus is not None
    empty = []
    for expr in _dashboard_expressions():
        if expr.startswith("label_values("):
            continue  # a Grafana function, not PromQL; its metric is checked above
        for variable, value in DASHBOARD_VARIABLES.items():
            expr = expr.replace(variable, value)
        if not _query(monitored.prometheus, expr):
            empty.append(expr)
    assert empty == []


@needs_prometheus
def test_prometheus_evaluates_the_rules_on_the_agents_series(monitored: Monitored) -> None:
    """The rules load and evaluate without error against the real series; the refused bundle
    fires at once; the temperature, and only it among the inputs, is pending drift (the rule
    waits 30 minutes before firing); nothing says the agent or its model is down."""
    assert monitored.prometheus is not None
    prometheus = monitored.prometheus
    _wait(lambda: bool(_alerts(prometheus, "EdgeAgentFeatureDrift")), "drift alert")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
    assert {n: h for n, h in health.items() if h[0] != "ok"} == {}
    assert len(health) == len(_rule_expressions())

    drift = _alerts(prometheus, "EdgeAgentFeatureDrift")
    assert {(a["labels"]["feature"], a["state"]) for a in drift} == {
        ("body_temperature", "pending")
    }
    refused = _alerts(prometheus, "EdgeAgentBundleVerificationFailed")
    assert [(a["labels"]["reason"], a["state"]) for a in refused] == [("signature", "firing")]
    for quiet in ("EdgeAgentDown", "EdgeAgentModelNotServing", "EdgeAgentInternalErrors"):
        assert _alerts(prometheus, quiet) == [], quiet


def _alerts(prometheus: str, name: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name]
