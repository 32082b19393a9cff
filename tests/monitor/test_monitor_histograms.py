"""``Monitor.histograms``: the bins the status page draws are the drift windows' own, over
the reference's bins, for the active version only."""

from __future__ import annotations

from collections.abc import Callable

from agent.monitor import Monitor
from agent.types import IntakePath
from tests.monitor.monitor_reference import Population, build_manifest, records, vector


def test_live_bins_are_the_window_and_reference_bins_the_manifest(
    monitor: Monitor, population: Callable[[int], Population]
) -> None:
    samples = population(21).sample(150)
    samples["temperature"] = samples["temperature"] * 9 / 5 + 32  # degF read as Cel
    for vec, outputs in records(samples):
        monitor.observe("sepsis", "1.0.0", IntakePath.http, vec, outputs, 0, 0, 0)
    missing = vector({"temperature": None, "heart_rate": 80.0, "age": 50.0, "sex": 0.0})
    monitor.observe("sepsis", "1.0.0", IntakePath.http, missing, {"risk": 0.1}, 0, 0, 0)

    manifest = build_manifest()
    drawn = {h.feature: h for h in monitor.histograms(manifest)}
    assert list(drawn) == ["temperature", "heart_rate", "age", "sex"]  # manifest order
    temperature = drawn["temperature"]
    reference = manifest.reference.features["temperature"].histogram
    assert reference is not None
    assert temperature.edges == tuple(reference.edges)
    assert temperature.reference == tuple(reference.fractions)
    assert temperature.unit == "Cel" and temperature.levels == ()
    assert temperature.live[-1] == sum(temperature.live) == 150  # all above 45: last bin
    assert sum(drawn["heart_rate"].live) == 151  # the missing temperature counts elsewhere
    features = monitor.snapshot()["models"]["sepsis"]["features"]
    assert temperature.drift == features["temperature"]["value"]
    assert (temperature.statistic, temperature.state) == ("psi", "act")
    sex = drawn["sex"]
    assert sex.levels == ("female", "male") and sex.statistic == "js"
    assert len(sex.live) == len(sex.reference) == 3  # the levels, then the unseen bucket
    assert sex.reference[-1] == 0.0 and sum(sex.live) == 151


def test_another_version_gets_no_histograms(monitor: Monitor) -> None:
    assert monitor.histograms(build_manifest(version="2.0.0")) == []
    assert len(monitor.histograms(build_manifest())) == 4
