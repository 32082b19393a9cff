"""Live performance on the real process: the demo's 200 holdout patients are scored over
HTTP, their outcomes arrive later by ``POST /v1/models/{m}/outcomes``, and the live AUROC,
Brier, calibration slope and PPV appear on /metrics, computed exactly as ``edge-agent
validate`` computes them (checked against scikit-learn's AUROC on the same scores). The
prediction store holds no patient reference, and nothing identifying reaches /metrics."""

from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import roc_auc_score

from tests.integration.agent_process import AgentProcess, demo_root, start_agent
from tests.integration.monitoring_records import REPO, ReferenceRow, bundle, patient_resources

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/deterioration/predict"
OUTCOMES = "/v1/models/deterioration/outcomes"
HOLDOUT = REPO / "fixtures" / "demo" / "holdout.csv"


def _holdout() -> list[tuple[ReferenceRow, int]]:
    rows = []
    with HOLDOUT.open(newline="") as f:
        for raw in csv.DictReader(f):
            label = int(raw.pop("label"))
            values = {k: (float(v) if v else None) for k, v in raw.items() if k != "sex"}
            rows.append((ReferenceRow(values, raw["sex"]), label))
    return rows


def _enable(config: dict[str, Any]) -> None:
    config["performance"] = {"enabled": True, "min_labelled": 30}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(demo_root(tmp_path_factory.mktemp("live"), _enable))
    yield process
    assert process.stop() == 0, process.log_text()


def _metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match[1].split(","))) == wanted:
            return float(match[2])
    return None


def test_outcomes_move_the_live_figures(agent: AgentProcess) -> None:
    observed = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    scores, labels, outcomes, references = [], [], [], []
    with agent.client() as client:
        for row, label in _holdout():
            resources = patient_resources(row, observed_at=observed)
            resources[0]["id"] = f"live-{uuid.uuid4().hex[:12]}"
            for resource in resources[1:]:
                resource["subject"] = {"reference": f"Patient/{resources[0]['id']}"}
            response = client.post(
                PREDICT,
                content=bundle(resources),
                headers={"Content-Type": "application/fhir+json"},
            )
            if response.status_code != 200:
                continue  # refused (e.g. out of range): not a prediction, no outcome to join
            [prediction] = response.json()["predictions"]
            scores.append(prediction["outputs"]["probability_1"])
            labels.append(label)
            references.append(resources[0]["id"])
            outcomes.append({"patient": f"Patient/{resources[0]['id']}", "label": label})
        before = client.get("/metrics").text
        unknown = client.post(
            OUTCOMES, json={"outcomes": [{"patient": "Patient/none", "label": 1}]}
        )
        answer = client.post(OUTCOMES, json={"outcomes": outcomes})
        bad = client.post(OUTCOMES, json={"outcomes": [{"patient": "Patient/x", "label": 2}]})
        after = client.get("/metrics").text
        page = client.get("/").text
    assert len(scores) >= 150 and 0 < sum(labels) < len(labels)
    assert _metric(before, "edge_agent_live_auroc", model="deterioration", version="1.0.0") is None
    assert unknown.json() == {"received": 1, "joined": 0}
    assert answer.status_code == 200 and answer.json() == {
        "received": len(outcomes),
        "joined": len(outcomes),
    }
    assert bad.status_code == 400 and "outcomes[0].label" in bad.text
    live = _metric(after, "edge_agent_live_auroc", model="deterioration", version="1.0.0")
    assert live == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    reference = _metric(after, "edge_agent_reference_auroc", model="deterioration", version="1.0.0")
    assert reference == 0.8386
    labelled = _metric(
        after, "edge_agent_live_labelled_predictions", model="deterioration", version="1.0.0"
    )
    assert labelled == len(scores)
    for name in ("edge_agent_live_brier", "edge_agent_live_calibration_slope"):
        assert _metric(after, name, model="deterioration", version="1.0.0") is not None
    assert (
        _metric(
            after,
            "edge_agent_live_ppv_ratio",
            model="deterioration",
            version="1.0.0",
            threshold="warning",
        )
        is not None
    )
    joined = _metric(after, "edge_agent_outcomes_total", model="deterioration", outcome="joined")
    assert joined == len(outcomes)
    store = agent.config_path.parent / "../var/demo/store/state/performance.sqlite"
    raw = Path(store).read_bytes() + b"".join(
        p.read_bytes() for p in Path(store).parent.glob("performance.sqlite-*")
    )
    assert not [r for r in references if r.encode() in raw]
    assert not [r for r in references if r in after]
    # the status page draws it: the latest figures and the AUROC over time
    assert "Live performance on this site's outcomes" in page
    assert f"<td class='live-auroc'>{live:.3f}</td>" in page
    assert "<polyline points=" in page and "class='reference'" in page
    assert not [r for r in references if r in page]
