"""``edge-agent validate --workers 2``: the demo's holdout history scored on a local Dask
cluster of two worker processes (each building its own pipeline from the agent config)
gives exactly the report of the in-process run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.intake.dropfolder_demo import demo_config
from tests.validation.test_validate_cmd import _holdout

pytestmark = pytest.mark.integration


def _validate(demo: Path, outcomes: Path, out: Path, export: Path, *flags: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "validate",
            "-c",
            str(demo),
            "--outcomes",
            str(outcomes),
            "--out",
            str(out),
            *flags,
            str(export),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return (out / "report.json").read_text()


def test_two_dask_workers_give_the_in_process_report(tmp_path: Path) -> None:
    demo = demo_config(tmp_path / "demo", {"model": "deterioration"})
    export, outcomes, _, labels, _ = _holdout(tmp_path)
    alone = _validate(demo, outcomes, tmp_path / "alone", export)
    spread = _validate(demo, outcomes, tmp_path / "dask", export, "--workers", "2")
    assert json.loads(spread) == json.loads(alone)
    assert json.loads(alone)["counts"]["scored"] == len(labels)
    html = (tmp_path / "dask" / "report.html").read_text()
    assert html == (tmp_path / "alone" / "report.html").read_text()
