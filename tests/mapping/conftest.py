"""The mapping tests' model: the demo ``deterioration`` input schema with training medians,
built here so the tests need no compiled bundle. Also the fixture paths and clinical time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.bundle.manifest import BundleManifest

ROOT = Path(__file__).resolve().parents[2]
FHIR = ROOT / "fixtures" / "fhir"
HL7 = ROOT / "fixtures" / "hl7"
MAPPINGS = ROOT / "config" / "mappings"
AS_OF = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # the fixtures' clinical "now"

# name, unit, min, max, training median
NUMERIC = [
    ("heart_rate", "/min", 20, 250, 84.0),
    ("respiratory_rate", "/min", 4, 60, 18.0),
    ("body_temperature", "Cel", 30, 43, 36.9),
    ("systolic_bp", "mm[Hg]", 50, 260, 126.0),
    ("spo2", "%", 50, 100, 96.0),
    ("wbc", "10*9/L", 0.1, 100, 8.1),
    ("creatinine", "umol/L", 20, 2000, 88.0),
    ("age", "a", 18, 110, 64.0),
]


def manifest_document() -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [
        {"name": n, "kind": "numeric", "unit": u, "min": lo, "max": hi}
        for n, u, lo, hi, _ in NUMERIC
    ]
    inputs.append({"name": "sex", "kind": "categorical", "levels": ["female", "male"]})
    features: dict[str, Any] = {n: {"count": 1000, "median": m} for n, *_, m in NUMERIC}
    features["sex"] = {"count": 1000, "category_frequencies": {"female": 0.47, "male": 0.53}}
    return {
        "name": "deterioration", "version": "1.0.0", "abi_version": 1, "inputs": inputs,
        "outputs": [{"name": "p_deterioration", "kind": "probability"}],
        "reference": {"rows": 1000, "features": features},
        "provenance": {"training_data_sha256": "0" * 64, "creator": "tests",
                       "created": "2026-01-01T00:00:00Z"},
        "files": {"model.wasm": {"sha256": "0" * 64, "size": 0}},
    }


@pytest.fixture
def manifest() -> BundleManifest:
    return BundleManifest.model_validate(manifest_document())
