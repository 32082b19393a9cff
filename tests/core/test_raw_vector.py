"""Raw feature rows (OIP, feature CSVs) reach the monitor flagged as mapped records are."""

import math
from pathlib import Path

from prometheus_client import CollectorRegistry

from agent.bundle.manifest import BundleManifest
from agent.monitor import Monitor, MonitorConfig
from agent.monitor.raw_vector import raw_vector
from agent.types import IntakePath

DEMO = Path(__file__).resolve().parents[2] / "fixtures/demo/build/deterioration/manifest.json"
MANIFEST = BundleManifest.model_validate_json(DEMO.read_bytes())
# heart_rate, respiratory_rate, body_temperature, systolic_bp, spo2, wbc, creatinine, age, sex
ROW = [88.0, 18.0, 37.0, 120.0, 97.0, 7.5, 80.0, 64.0, 1.0]


def test_missing_out_of_range_and_unseen_are_flagged() -> None:
    row = [*ROW]
    row[2] = 98.6  # degF in a Cel feature: out of the manifest's range
    row[5] = math.nan  # missing
    row[8] = 2.0  # sex has two levels: 2 is no level
    flags = {f.name: f for f in raw_vector(MANIFEST, row).features}
    assert flags["body_temperature"].out_of_range
    assert flags["wbc"].value is None
    assert flags["sex"].unseen_category
    assert not any(
        f.out_of_range or f.unseen_category
        for f in flags.values()
        if f.name not in ("body_temperature", "sex")
    )


def test_raw_rows_fill_the_drift_windows() -> None:
    registry = CollectorRegistry()
    monitor = Monitor(registry, MonitorConfig(), models=["deterioration"])
    monitor.register_model(MANIFEST, "d" * 64, "k" * 16)
    for _ in range(3):
        monitor.observe(
            "deterioration",
            "1.0.0",
            IntakePath.oip,
            raw_vector(MANIFEST, ROW),
            {"probability_1": 0.1},
            0.0,
            1e-5,
            1e-5,
        )
    window = registry.get_sample_value(
        "edge_agent_drift_window_records", {"model": "deterioration"}
    )
    assert window == 3
