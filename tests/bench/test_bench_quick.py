"""The benchmark suite runs end to end in quick mode and writes well-formed outputs.

No timing is asserted: on a shared two-core machine the figures of a quick run mean
nothing. What is checked is that every benchmark ran (real agent process, real peer
services, drop folder, micro-benchmarks, bench/runtime_bench.py) and reported numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.run import main

pytestmark = pytest.mark.integration

CONTENDERS = {"agent", "agent, full validation", "sklearn service", "onnxruntime service"}


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_run_writes_json_and_markdown(tmp_path: Path) -> None:
    results_path, report_path = tmp_path / "results.json", tmp_path / "benchmarks.md"
    assert main(["--quick", "--json", str(results_path), "--markdown", str(report_path)]) == 0

    results = json.loads(results_path.read_text())
    assert results["mode"] == "quick"
    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    assert results["peer_parity_max_abs_diff"] < 1e-5  # the peers serve the same model

    for key in ("http", "http_vitals"):  # the 30-observation bundle, the vitals bundle
        assert {row["contender"] for row in results[key]} == CONTENDERS
    assert results["vitals_request_bytes"] < results["request_bytes"]
    for row in results["http"] + results["http_vitals"]:
        for key in (
            "p50_ms",
            "p99_ms",
            "loaded_p50_ms",
            "loaded_p99_ms",
            "requests_per_s",
            "rss_bytes",
            "cold_start_s",
        ):
            assert _positive(row[key]), (row["contender"], key)
        assert row["p50_ms"] <= row["p99_ms"]
        assert row["server_cpu_ms_per_request"] >= 0  # clock ticks: may round to 0 when quick
    assert _positive(results["agent_first_start_s"])
    assert _positive(results["agent_hl7_http"]["p50_ms"])

    assert {row["contender"] for row in results["batch"]} == CONTENDERS
    assert all(
        _positive(row["seconds"]) and row["records"] > 0 and row["cpu_seconds"] >= 0
        for row in results["batch"]
    )
    measures = {m["measure"]: m for m in results["micro"]}
    assert "map 30 observations to 9 features" in measures
    assert "whole request in process, vitals bundle" in measures  # the HTTP stack's share
    assert "whole request, process CPU" in measures  # the writer threads' work counted
    assert all(_positive(m["agent"]) for m in measures.values())
    assert results["runtime_bench"].strip()  # bench/runtime_bench.py printed its table
    for size in results["install"]:  # present only where a full run cached the virtualenvs
        assert size["contender"] in CONTENDERS and _positive(size["bytes"])

    report = report_path.read_text()
    assert report.startswith("# Benchmarks")
    assert "Quick mode" in report
    for heading in (
        "## Machine",
        "## Goals",
        "## HTTP: one 30-observation FHIR Bundle per request",
        "## HTTP: the small vitals Bundle (Patient + 5 Observations) per request",
        "## Batch",
        "## Validation: `edge-agent validate` in process and on Dask",
        "## Install size",
        "## In-process micro-benchmarks",
        "## Runtime micro-benchmarks",
    ):
        assert heading in report
    clients = results["settings"]["clients"]
    for goal in (f"{clients} clients, vitals bundle", "CPU-second vs sklearn service, vitals"):
        assert goal in report
