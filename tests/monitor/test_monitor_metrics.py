"""The exported metrics: names, labels, what callers can and cannot put in a label, the
active-version series on a swap, pull outcomes, and a clean ``promtool check metrics``."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.monitor import Monitor, MonitorConfig
from agent.monitor.readings import LATENCY_BUCKETS
from agent.types import IntakePath
from tests.monitor.monitor_reference import Population, build_manifest, records

ALLOWED_LABELS = {
    "model",
    "version",
    "feature",
    "output",
    "intake",
    "reason",
    "stage",
    "registry",
    "keyid",
    "mode",
    "role",
    "threshold",
    "statistic",
}


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def feed(monitor: Monitor, population: Population, n: int, intake: IntakePath) -> None:
    for vec, outputs in records(population.sample(n)):
        monitor.observe("sepsis", "1.0.0", intake, vec, outputs, 2e-4, 1e-4, 4e-4)


def test_every_metric_is_namespaced_and_uses_only_documented_labels(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    feed(monitor, population(1), 150, IntakePath.http)
    monitor.observe_error("sepsis", IntakePath.mllp, "unmappable")
    monitor.observe_pull("sepsis", "central", "failed", "signature")
    monitor.observe_pull("sepsis", "central", "failed", "registry")
    monitor.observe_pull("sepsis", "central", "current")
    names = set()
    for family in text_string_to_metric_families(exposition(registry)):
        assert family.name.startswith("edge_agent_"), family.name
        names.add(family.name)
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= ALLOWED_LABELS, sample
    documented = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text(encoding="utf-8")
    for name in names - {n for n in names if n.endswith("_created")}:
        assert f"`{name}" in documented, f"{name} is not in docs/metrics.md"


def test_latency_by_stage_and_counts(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    feed(monitor, population(2), 10, IntakePath.drop_folder)
    base = {"model": "sepsis", "version": "1.0.0", "intake": "drop_folder"}
    for stage, seconds in (("mapping", 2e-4), ("inference", 1e-4), ("total", 4e-4)):
        labels = {**base, "stage": stage}
        assert registry.get_sample_value("edge_agent_request_duration_seconds_count", labels) == 10
        assert registry.get_sample_value(
            "edge_agent_request_duration_seconds_sum", labels
        ) == pytest.approx(10 * seconds)
    # The smallest bucket catches sub-millisecond WebAssembly calls.
    assert (
        registry.get_sample_value(
            "edge_agent_request_duration_seconds_bucket",
            {**base, "stage": "inference", "le": "0.0001"},
        )
        == 10
    )
    assert registry.get_sample_value("edge_agent_predictions_total", base) == 10
    assert (
        registry.get_sample_value(
            "edge_agent_requests_total", {"model": "sepsis", "intake": "drop_folder"}
        )
        == 10
    )
    latency = monitor.snapshot()["models"]["sepsis"]["latency_seconds"]
    assert latency == {"p50": 4e-4, "p95": 4e-4, "p99": 4e-4}


def test_callers_cannot_mint_label_values(registry: CollectorRegistry) -> None:
    monitor = Monitor(registry, MonitorConfig(), models=["sepsis"])
    monitor.observe_error("Robert'); DROP TABLE--", IntakePath.http, "bad_input")
    monitor.observe_error("sepsis", IntakePath.http, "patient 12345 has no lactate")
    monitor.observe_error("sepsis", IntakePath.http, "internal")
    text = exposition(registry)
    assert "DROP" not in text and "12345" not in text
    errors = {"intake": "http"}
    assert (
        registry.get_sample_value(
            "edge_agent_errors_total", {**errors, "model": "unknown", "reason": "bad_input"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "edge_agent_errors_total", {**errors, "model": "sepsis", "reason": "other"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "edge_agent_errors_total", {**errors, "model": "sepsis", "reason": "internal"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "edge_agent_requests_total", {"model": "sepsis", "intake": "http"}
        )
        == 2
    )
    assert monitor.snapshot()["models"]["sepsis"]["errors"] == {"internal": 1, "other": 1}


def test_swap_replaces_the_active_version_series(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    feed(monitor, population(3), 150, IntakePath.http)
    monitor.register_model(build_manifest("1.1.0"), "b" * 64, "publisher-2027")
    active = [
        s
        for f in text_string_to_metric_families(exposition(registry))
        if f.name == "edge_agent_model_active_info"
        for s in f.samples
    ]
    assert [(s.labels, s.value) for s in active] == [
        ({"model": "sepsis", "version": "1.1.0", "keyid": "publisher-2027"}, 1.0)
    ]
    # The new version starts from an empty window, against its own reference.
    assert registry.get_sample_value("edge_agent_drift_window_records", {"model": "sepsis"}) == 0
    assert (
        registry.get_sample_value(
            "edge_agent_feature_drift_psi", {"model": "sepsis", "feature": "age"}
        )
        is None
    )
    assert monitor.snapshot()["models"]["sepsis"]["version"] == "1.1.0"


def test_pull_outcomes(monitor: Monitor, registry: CollectorRegistry) -> None:
    monitor.observe_pull("sepsis", "central", "updated")
    monitor.observe_pull("sepsis", "central", "failed", "rollback")
    monitor.observe_pull("sepsis", "central", "failed", "registry")
    monitor.observe_pull("sepsis", "central", "failed", "expired")
    labels = {"model": "sepsis", "registry": "central"}
    assert registry.get_sample_value("edge_agent_bundle_pulls_total", labels) == 4
    assert registry.get_sample_value("edge_agent_bundle_updates_total", labels) == 1
    assert (
        registry.get_sample_value(
            "edge_agent_bundle_last_successful_pull_timestamp_seconds", labels
        )
        > 1.7e9
    )
    assert (
        registry.get_sample_value(
            "edge_agent_bundle_verification_failures_total", {**labels, "reason": "rollback"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "edge_agent_bundle_verification_failures_total", {**labels, "reason": "expired"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "edge_agent_bundle_pull_failures_total", {**labels, "reason": "registry"}
        )
        == 1
    )
    with pytest.raises(ValueError):
        monitor.observe_pull("sepsis", "central", "exploded")  # type: ignore[arg-type]


def test_build_info(monitor: Monitor, registry: CollectorRegistry) -> None:
    assert registry.get_sample_value("edge_agent_build_info", {"version": __version__}) == 1


def test_concurrent_observers_lose_nothing(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    rows = list(records(population(4).sample(200)))

    def work() -> None:
        for vec, outputs in rows:
            monitor.observe("sepsis", "1.0.0", IntakePath.http, vec, outputs, 0, 0, 0)
            monitor.observe_error("sepsis", IntakePath.http, "deadline")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    scrapes = [exposition(registry) for _ in range(20)]  # scrape while they write
    for t in threads:
        t.join()
    assert all(s for s in scrapes)
    assert (
        registry.get_sample_value(
            "edge_agent_requests_total", {"model": "sepsis", "intake": "http"}
        )
        == 1600
    )
    assert monitor.snapshot()["models"]["sepsis"]["predictions"] == 800
    assert registry.get_sample_value("edge_agent_drift_window_records", {"model": "sepsis"}) == 500


def test_promtool_finds_no_lint_problem(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    feed(monitor, population(5), 150, IntakePath.http)
    monitor.observe_error("sepsis", IntakePath.http, "unmappable")
    monitor.observe_pull("sepsis", "central", "updated")
    monitor.observe_pull("sepsis", "central", "failed", "signature")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "", result.stdout.decode()


def test_latency_bins_export_what_the_client_histogram_would(
    monitor: Monitor, registry: CollectorRegistry, population: Callable[[int], Population]
) -> None:
    """The monitor keeps its own preallocated bins; the samples must be the ones the
    client's ``Histogram`` gives for the same observations, bucket edges included."""
    reference = CollectorRegistry()
    client = Histogram(
        "request_duration_seconds",
        "",
        ["stage"],
        namespace="edge_agent",
        registry=reference,
        buckets=LATENCY_BUCKETS,
    ).labels("total")
    seconds = [0.0, 6e-5, 0.0011, 11.0, *LATENCY_BUCKETS]
    ((vec, outputs),) = records(population(3).sample(1))
    for s in seconds:
        monitor.observe("sepsis", "1.0.0", IntakePath.http, vec, outputs, s, s, s)
        client.observe(s)
    ours = {"model": "sepsis", "version": "1.0.0", "intake": "http", "stage": "total"}
    name = "edge_agent_request_duration_seconds"
    les = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
    for suffix, extra in [("_bucket", {"le": le}) for le in les] + [("_sum", {}), ("_count", {})]:
        want = reference.get_sample_value(name + suffix, {"stage": "total", **extra})
        assert want is not None
        assert registry.get_sample_value(name + suffix, {**ours, **extra}) == pytest.approx(want)
    assert registry.get_sample_value(name + "_created", ours) is not None
