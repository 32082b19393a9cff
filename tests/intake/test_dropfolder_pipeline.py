"""The drop folder wired to the real ScoringPipeline (signed demo bundle, wasm model, the
demo site mapping), as the daemon wires it."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.intake.dropfolder.folder import DropFolder
from agent.pipeline import ScoringPipeline
from tests.intake.dropfolder_demo import REPO, demo_config, shifted_to_now

pytestmark = pytest.mark.integration
FIXTURE_TIME = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # when the fixture vitals were taken


def _wait_for_json(path: Path, timeout: float = 15.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path.name} did not appear")


def test_drop_folder_scores_through_the_pipeline(tmp_path: Path) -> None:
    drop_folder = {
        "enabled": True,
        "model": "deterioration",
        "inbox": "../drop/inbox",
        "outbox": "../drop/outbox",
        "processed": "../drop/processed",
        "failed": "../drop/failed",
        "state": "../drop/state",
        "settle_seconds": 0.2,
        "poll_interval": 0.2,
        "outputs": ["ndjson", "fhir"],
    }
    config = load_config(demo_config(tmp_path, drop_folder))
    pipeline = ScoringPipeline.from_config(config)
    drop = DropFolder(config.drop_folder, pipeline, pipeline.limits)
    drop.start()
    try:
        bundle = (REPO / "fixtures" / "fhir" / "demo-patient-bundle.json").read_text()
        body = json.dumps(json.loads(shifted_to_now(bundle, FIXTURE_TIME)))
        patient_id = "739b45d0-7746-59f2-9b42-f7efa74cec54"
        other = body.replace(patient_id, "00000000-0000-4000-8000-000000000002")
        inbox = config.drop_folder.inbox
        (inbox / ".ward.tmp").write_text(f"{body}\n{{oops\n{other}\n")
        os.rename(inbox / ".ward.tmp", inbox / "ward.ndjson")
        outbox = config.drop_folder.outbox
        report = _wait_for_json(outbox / "ward.ndjson.report.json")
    finally:
        drop.stop()

    assert report["records"] == {"in": 3, "ok": 2, "failed": 1}
    results = (outbox / "ward.ndjson.results.ndjson").read_text().splitlines()
    lines = [json.loads(x) for x in results]
    assert [(x["position"], x["lines"], x["status"]) for x in lines] == [
        (1, [1, 1], "ok"),
        (2, [2, 2], "error"),
        (3, [3, 3], "ok"),
    ]
    assert lines[0]["label"] == f"Patient/{patient_id}" and lines[0]["version"] == "1.0.0"
    assert lines[0]["outputs"] == lines[2]["outputs"]  # same vitals, same risk
    assert 0.0 <= lines[0]["outputs"]["probability_1"] <= 1.0
    assert lines[1]["reason"] == "bad_json"
    risks = (outbox / "ward.ndjson.riskassessment.ndjson").read_text().splitlines()
    subjects = [json.loads(r)["subject"]["reference"] for r in risks]
    assert subjects == [lines[0]["label"], lines[2]["label"]]
    assert (config.drop_folder.processed / "ward.ndjson").exists()
