"""Drift against the bundle's reference: quiet on the training distribution, loud on a real
shift (a temperature sent in degF but read as Cel), for the right feature only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from agent.bundle.manifest import OutputKind, OutputSpec, ValueReference
from agent.monitor import Monitor, MonitorConfig
from agent.monitor.drift import CategoricalWindow, NumericWindow, js_distance, psi
from agent.types import IntakePath
from tests.monitor.monitor_reference import Population, build_manifest, records, vector

NUMERIC = ("temperature", "heart_rate", "age")


def feed(monitor: Monitor, rows: object) -> None:
    for vec, outputs in rows:  # type: ignore[attr-defined]
        monitor.observe("sepsis", "1.0.0", IntakePath.http, vec, outputs, 1e-4, 1e-4, 3e-4)


def drift(registry: CollectorRegistry, name: str, metric: str = "feature_drift_psi") -> float:
    label = "output" if metric.startswith("output") else "feature"
    value = registry.get_sample_value(f"edge_agent_{metric}", {"model": "sepsis", label: name})
    assert value is not None, f"no {metric} for {name}"
    return value


def test_psi_is_zero_on_the_reference_and_grows_with_shift() -> None:
    reference = [0.25, 0.25, 0.25, 0.25]
    assert psi([25, 25, 25, 25], reference, 1e-4) == pytest.approx(0.0)
    mild = psi([30, 25, 25, 20], reference, 1e-4)
    strong = psi([70, 10, 10, 10], reference, 1e-4)
    assert 0 < mild < 0.1 < 0.25 < strong
    # An empty bin is smoothed, not infinite.
    assert psi([0, 50, 50, 0], reference, 1e-4) < 10


def test_js_distance_is_bounded() -> None:
    assert js_distance([5, 5], [0.5, 0.5]) == pytest.approx(0.0)
    assert js_distance([10, 0], [0.0, 1.0]) == pytest.approx(1.0)
    assert 0 < js_distance([6, 4], [0.5, 0.5]) < 0.1


def test_window_forgets_what_slid_out() -> None:
    window = NumericWindow([0.0], [0.5, 0.5], size=10, epsilon=1e-4, reference_missing_rate=0)
    for _ in range(10):
        window.add(-1.0)
    for _ in range(5):
        window.add(None)
    for _ in range(10):
        window.add(1.0)
    # Only the last ten records remain: all in the upper bin, none missing.
    assert window.records == 10
    assert window.missing_ratio() == 0
    assert window.value() == pytest.approx(psi([0, 10], [0.5, 0.5], 1e-4))


def test_value_on_an_edge_falls_in_the_bin_above() -> None:
    window = NumericWindow(
        [1.0, 2.0], [0.0, 0.0, 1.0], size=4, epsilon=1e-4, reference_missing_rate=0
    )
    window.add(2.0)
    assert window.value() == pytest.approx(0.0)


def test_categorical_window_counts_unseen_apart() -> None:
    window = CategoricalWindow(["a", "b"], {"a": 0.5, "b": 0.5}, size=10, reference_missing_rate=0)
    for level in (0.0, 1.0, 0.0, 1.0):
        window.add(level)
    window.add(None, unseen=True)
    window.add(None)
    assert window.unseen_ratio() == pytest.approx(1 / 5)
    assert window.missing_ratio() == pytest.approx(1 / 6)
    assert window.value() == pytest.approx(js_distance([2, 2, 1], [0.5, 0.5, 0.0]))


def test_no_drift_on_the_training_distribution(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    feed(monitor, records(population(7).sample(500)))
    for name in NUMERIC:
        assert drift(registry, name) < 0.1, name
    assert drift(registry, "sex", "feature_drift_js_distance") < 0.1
    assert drift(registry, "risk", "output_drift_psi") < 0.1
    states = monitor.snapshot()["models"]["sepsis"]["features"]
    assert {s["state"] for s in states.values()} == {"ok"}


def test_degf_read_as_cel_drifts_that_feature_only(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    feed(monitor, records(population(7).sample(500)))
    shifted = population(8).sample(500)
    shifted["temperature"] = shifted["temperature"] * 9 / 5 + 32  # degF, unconverted
    feed(monitor, records(shifted))

    assert drift(registry, "temperature") > 0.25
    for name in ("heart_rate", "age"):
        assert drift(registry, name) < 0.1, name
    assert drift(registry, "sex", "feature_drift_js_distance") < 0.1
    features = monitor.snapshot()["models"]["sepsis"]["features"]
    assert features["temperature"]["state"] == "act"
    assert features["heart_rate"]["state"] == "ok"


def test_mild_shift_is_watch_not_act(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    shifted = population(9).sample(500)
    shifted["heart_rate"] = shifted["heart_rate"] + 4.2  # a third of a standard deviation
    feed(monitor, records(shifted))
    assert 0.1 <= drift(registry, "heart_rate") < 0.25
    assert monitor.snapshot()["models"]["sepsis"]["features"]["heart_rate"]["state"] == "watch"


def test_category_shift_and_unseen_categories(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    samples = population(10).sample(400)
    samples["sex"] = np.ones(400)  # every record "male": a ward, not the population
    feed(monitor, records(samples))
    for i in range(100):
        row: dict[str, float | None] = {
            "temperature": 37.0,
            "heart_rate": 80.0,
            "age": 50.0 + i % 10,
            "sex": None,
        }
        vec = vector(row, unseen_category={"sex": True})
        monitor.observe("sepsis", "1.0.0", IntakePath.mllp, vec, {"risk": 0.2}, 1e-4, 1e-4, 3e-4)
    assert drift(registry, "sex", "feature_drift_js_distance") > 0.1
    labels = {"model": "sepsis", "feature": "sex"}
    assert registry.get_sample_value(
        "edge_agent_feature_window_unseen_category_ratio", labels
    ) == pytest.approx(0.2)
    assert registry.get_sample_value("edge_agent_feature_unseen_category_total", labels) == 100
    # An unseen category is data that arrived, not missing data.
    assert registry.get_sample_value("edge_agent_feature_missing_total", labels) is None


def test_missing_and_imputed_values_leave_the_distribution(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    samples = population(11).sample(300)
    rows = list(records(samples))
    feed(monitor, rows[:200])
    for vec, outputs in rows[200:]:
        values = {f.name: f.value for f in vec.features}
        values["temperature"] = 37.0  # the training median, imputed by the mapping
        monitor.observe(
            "sepsis",
            "1.0.0",
            IntakePath.http,
            vector(values, imputed={"temperature": True}),
            outputs,
            0,
            0,
            0,
        )
    labels = {"model": "sepsis", "feature": "temperature"}
    assert registry.get_sample_value(
        "edge_agent_feature_window_missing_ratio", labels
    ) == pytest.approx(100 / 300)
    assert registry.get_sample_value(
        "edge_agent_feature_reference_missing_ratio", labels
    ) == pytest.approx(0.02)
    assert registry.get_sample_value("edge_agent_feature_imputed_total", labels) == 100
    assert registry.get_sample_value("edge_agent_feature_missing_total", labels) == 100
    # 100 imputed medians did not pile up in the median's bin.
    assert drift(registry, "temperature") < 0.1


def test_drift_waits_for_enough_records(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    feed(monitor, records(population(12).sample(99)))
    labels = {"model": "sepsis", "feature": "temperature"}
    assert registry.get_sample_value("edge_agent_feature_drift_psi", labels) is None
    assert registry.get_sample_value("edge_agent_drift_window_records", {"model": "sepsis"}) == 99
    snapshot = monitor.snapshot()["models"]["sepsis"]
    assert snapshot["features"]["temperature"]["state"] == "insufficient"
    feed(monitor, records(population(13).sample(1)))
    assert registry.get_sample_value("edge_agent_feature_drift_psi", labels) is not None


def test_only_the_active_version_feeds_the_windows(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    for vec, outputs in records(population(14).sample(200)):
        monitor.observe("sepsis", "0.9.0", IntakePath.http, vec, outputs, 0, 0, 0)
    assert registry.get_sample_value("edge_agent_drift_window_records", {"model": "sepsis"}) == 0
    assert (
        registry.get_sample_value(
            "edge_agent_predictions_total",
            {"model": "sepsis", "version": "0.9.0", "intake": "http"},
        )
        == 200
    )


def test_class_output_drift_uses_js_over_class_frequencies(
    registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    base = build_manifest()
    manifest = base.model_copy(
        update={
            "outputs": [OutputSpec(name="label", kind=OutputKind.label, classes=["no", "yes"])],
            "reference": base.reference.model_copy(
                update={
                    "outputs": {
                        "label": ValueReference(
                            count=1000, category_frequencies={"no": 0.9, "yes": 0.1}
                        )
                    }
                }
            ),
        }
    )
    monitor = Monitor(registry, MonitorConfig(window_records=200, min_window_records=50))
    monitor.register_model(manifest, "c" * 64, "k")
    for vec, _ in records(population(15).sample(200)):
        monitor.observe("sepsis", "1.0.0", IntakePath.http, vec, {"label": 1.0}, 0, 0, 0)
    assert drift(registry, "label", "output_drift_js_distance") > 0.5
    assert monitor.snapshot()["models"]["sepsis"]["outputs"]["label"]["state"] == "act"
