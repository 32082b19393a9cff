"""Drift on a real shift, end to end on the real process.

The demo agent scores records drawn from its model's own training reference: every drift
gauge stays under "watch". Then the same kind of records arrive with the body temperature
converted to degF but still labelled Cel (a units mix-up at the source): the temperature's
PSI crosses "act" while every other feature stays under "watch". Read from /metrics as
Prometheus would. The records go through FHIR intake, mapping included (raw OIP vectors
feed the same windows: tests/core/test_vector_scoring.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.monitor import MonitorConfig
from tests.integration.agent_process import AgentProcess, demo_root, flag_out_of_range, start_agent
from tests.integration.monitoring_records import (
    NDJSON,
    PREDICT,
    ReferenceRow,
    celsius_read_as_fahrenheit,
    ndjson,
    reference_rows,
)

pytestmark = pytest.mark.integration

# Records per window: half the reference's 2000 rows. Sampling noise matters here: over 400
# records the JS distance of a two-level category passes "watch" (0.05) in about 2% of
# samples from the training population itself; over 1000, in 0.015% (docs/metrics.md).
WINDOW = 1000
BATCH = 250  # records per request, well inside the body and resource limits
THRESHOLDS = MonitorConfig()  # psi_watch 0.1, psi_act 0.25, js_act 0.1 (watch at half)


def _small_window(config: dict[str, Any]) -> None:
    config["monitor"] = {"window_records": WINDOW, "min_window_records": WINDOW // 2}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    config_path = demo_root(tmp_path_factory.mktemp("drift"), _small_window)
    flag_out_of_range(config_path, "body_temperature")  # the degF mix-up shows as drift
    process = start_agent(config_path)
    yield process
    assert process.stop() == 0, process.log_text()


def _score(agent: AgentProcess, rows: list[ReferenceRow]) -> None:
    with agent.client() as client:
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            response = client.post(PREDICT, content=ndjson(batch), headers={"Content-Type": NDJSON})
            assert response.status_code == 200, response.text
            assert len(response.json()["predictions"]) == len(batch)


def _drift(agent: AgentProcess) -> dict[str, float]:
    """feature -> PSI or JS distance of the demo model, from a scrape of /metrics."""
    with agent.client() as client:
        text = client.get("/metrics").text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("edge_agent_feature_drift_psi", "edge_agent_feature_drift_js_distance"):
            for sample in family.samples:
                assert sample.labels["model"] == "deterioration"
                found[sample.labels["feature"]] = sample.value
    return found


def _under_watch(drift: dict[str, float]) -> dict[str, float]:
    """The features at or above "watch": PSI 0.1 for numbers, JS 0.05 for sex."""
    return {
        f: v
        for f, v in drift.items()
        if v >= (THRESHOLDS.js_act / 2 if f == "sex" else THRESHOLDS.psi_watch)
    }


def test_temperature_in_degf_labelled_cel_crosses_act_alone(agent: AgentProcess) -> None:
    rows = reference_rows()
    random.Random(7).shuffle(rows)
    features = {
        "heart_rate",
        "respiratory_rate",
        "body_temperature",
        "systolic_bp",
        "spo2",
        "wbc",
        "creatinine",
        "age",
        "sex",
    }

    _score(agent, rows[:WINDOW])
    before = _drift(agent)
    assert set(before) == features
    assert _under_watch(before) == {}, before

    _score(agent, [celsius_read_as_fahrenheit(r) for r in rows[WINDOW : 2 * WINDOW]])
    after = _drift(agent)
    assert after["body_temperature"] >= THRESHOLDS.psi_act, after
    assert set(_under_watch(after)) == {"body_temperature"}, after
