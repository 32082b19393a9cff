"""Raw feature rows through the real pipeline (the signed demo bundle, its wasm model and
the demo site mapping): one outcome per row under the mapping's rules, each refusal counted
with the mapped refusals, each scored row observed like a mapped record."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.config import load_config
from agent.errors import RecordError
from agent.pipeline import ScoringPipeline
from agent.types import IntakePath
from tests.intake.dropfolder_demo import demo_config

# heart_rate, respiratory_rate, body_temperature, systolic_bp, spo2, wbc, creatinine, age, sex
ROW = [88.0, 18.0, 37.0, 120.0, 97.0, 7.5, 80.0, 64.0, 1.0]


def _with(index: int, value: float) -> list[float]:
    row = [*ROW]
    row[index] = value
    return row


@pytest.fixture
def plane(tmp_path: Path) -> tuple[ScoringPipeline, CollectorRegistry]:
    registry = CollectorRegistry()
    pipeline = ScoringPipeline.from_config(load_config(demo_config(tmp_path, {})), registry)
    return pipeline, registry


def _count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"model": "deterioration", **labels}) or 0.0


def test_rows_get_one_outcome_each_under_the_mappings_rules(
    plane: tuple[ScoringPipeline, CollectorRegistry],
) -> None:
    pipeline, registry = plane
    model = pipeline.model("deterioration")
    rows = [ROW, _with(2, 100.4), _with(0, math.nan), _with(5, math.nan)]
    result = pipeline.score_vectors(model, rows, IntakePath.oip)
    assert (result.model, result.version, result.bundle_digest) == (
        model.name,
        model.version,
        model.digest,
    )
    assert [o.scored for o in result.outcomes] == [True, False, False, True]
    fever, no_pulse = result.outcomes[1].refusal, result.outcomes[2].refusal
    assert fever is not None and no_pulse is not None
    assert (fever.reason, fever.feature) == ("out_of_range", "body_temperature")
    assert "[30, 43] Cel" in fever.detail and "100.4" not in fever.detail
    assert (no_pulse.reason, no_pulse.feature) == ("missing", "heart_rate")

    imputed = result.outcomes[3].prediction
    assert imputed is not None and imputed.vector.features[5].imputed
    median = model.manifest.reference.features["wbc"].median
    assert median is not None
    [filled] = pipeline.score_vectors(model, [_with(5, median)], IntakePath.oip).predictions
    assert imputed.outputs == filled.outputs  # the mapping's training median, as for a record

    for reason in ("out_of_range", "missing"):
        assert _count(registry, "edge_agent_errors_total", intake="oip", reason=reason) == 1.0
    assert _count(registry, "edge_agent_requests_total", intake="oip") == 5.0  # 3 scored + 2
    # observed as a mapped record is: feature counters and the drift windows
    assert _count(registry, "edge_agent_feature_imputed_total", feature="wbc") == 1.0
    assert _count(registry, "edge_agent_drift_window_records") == 3.0


def test_a_malformed_request_is_refused_whole_and_counted(
    plane: tuple[ScoringPipeline, CollectorRegistry],
) -> None:
    pipeline, registry = plane
    model = pipeline.model("deterioration")
    with pytest.raises(RecordError, match="each row needs 9 features"):
        pipeline.score_vectors(model, [ROW, ROW[:-1]], IntakePath.oip)
    with pytest.raises(RecordError, match="finite"):
        pipeline.score_vectors(model, [_with(0, math.inf)], IntakePath.oip)
    assert _count(registry, "edge_agent_errors_total", intake="oip", reason="bad_input") == 2.0
