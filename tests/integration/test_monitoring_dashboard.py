"""The Grafana dashboard (deploy/grafana/edge-agent.json): importable JSON whose panels are
laid out without overlap, query through the dashboard's data-source variable, and draw the
drift thresholds the agent itself uses. That the metric names exist is checked against a
real scrape in test_monitoring.py; that the queries run, against a real Prometheus in
test_monitoring_prometheus.py."""

from __future__ import annotations

import json
from typing import Any

from agent.monitor import MonitorConfig
from tests.integration.agent_process import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "edge-agent.json"


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panel(title_start: str) -> dict[str, Any]:
    return next(p for p in _dashboard()["panels"] if p["title"].startswith(title_start))


def _thresholds(panel: dict[str, Any]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s["value"] for s in steps if s["value"] is not None]


def test_dashboard_identity_and_variables() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "edge-agent" and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"instance", "model"} <= set(variables)


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_every_query_goes_through_the_datasource_variable() -> None:
    for panel in _dashboard()["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}"


def test_drift_panels_draw_the_agents_thresholds() -> None:
    defaults = MonitorConfig()
    assert _thresholds(_panel("Input drift: PSI")) == [defaults.psi_watch, defaults.psi_act]
    assert _thresholds(_panel("Input drift: Jensen-Shannon")) == [
        defaults.js_act / 2,
        defaults.js_act,
    ]
    for title in ("Input drift", "Output drift"):
        style = _panel(title)["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]
        assert style["mode"] != "off"


def test_required_views_are_there() -> None:
    """Latency percentiles, throughput, errors by reason, drift per feature, missing rate,
    active version: each has a panel querying its metric."""
    exprs = " ".join(t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", []))
    for wanted in (
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "edge_agent_predictions_total",
        "sum by (model, intake, reason) (rate(edge_agent_errors_total",
        "edge_agent_feature_drift_psi",
        "edge_agent_feature_window_missing_ratio",
        "edge_agent_model_active_info",
    ):
        assert wanted in exprs, wanted
