"""bench/validation_bench.py in quick mode: ``edge-agent validate`` ran in process and on a
local Dask cluster of 1 and 2 workers on the generator's labelled history, the three
reports were identical (the benchmark checks it), and each engine has a rate and a ratio to
the in-process run. No timing is asserted (a shared two-core machine)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import validation_bench
from bench.report import _validation

pytestmark = pytest.mark.integration


def test_quick_run_measures_every_engine(tmp_path: Path) -> None:
    results = validation_bench.run(True, tmp_path)
    sizes = validation_bench.Sizes.for_mode(True)
    assert results["patients"] == sizes.patients
    rows = {row["engine"]: row for row in results["rows"]}
    assert list(rows) == ["in process", "dask, 1 worker", "dask, 2 workers"]
    assert [row["workers"] for row in rows.values()] == [0, 1, 2]
    for name, row in rows.items():
        assert math.isfinite(row["records_per_s"]) and row["records_per_s"] > 0, name
        assert row["records_per_s"] == pytest.approx(sizes.patients / row["seconds"]), name
        assert row["cpu_seconds"] > 0 and row["fixed_seconds"] > 0, name
    assert rows["in process"]["records_per_s_vs_in_process"] == 1.0
    assert rows["dask, 2 workers"]["records_per_s_vs_in_process"] == pytest.approx(
        rows["dask, 2 workers"]["records_per_s"] / rows["in process"]["records_per_s"]
    )
    table = "\n".join(_validation({"validation": results, "machine": {"cores": 2}}))
    assert "| dask, 2 workers |" in table and "## Validation" in table


def test_history_has_the_patients_asked_for(tmp_path: Path) -> None:
    export, outcomes = validation_bench.history(tmp_path, 230)  # past the 200 holdout rows
    rows = outcomes.read_text().splitlines()
    assert rows[0] == "patient,as_of,label,ward" and len(rows) == 231
    assert len({row.split(",")[0] for row in rows[1:]}) == 230  # fresh ids on the second pass
    assert export.read_text().count('"resourceType": "Patient"') == 230
