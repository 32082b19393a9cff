"""Outcome CSVs in the drop folder of the real process, when they cannot be recorded at
once. Dropped before the model's bundle is pulled (its registry not reachable yet), an
outcome file waits beside the scored file that came before it; once the bundle is pulled
both are taken up, the predictions first, and the outcomes join them, each recorded once.
Dropped while live performance is off, an outcome file goes whole to ``failed/`` with
``not_enabled``, kept as it came."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.intake.test_dropfolder import wait_for
from tests.integration.agent_process import REPO, AgentProcess, start_agent
from tests.integration.monitoring_records import patient_resources, reference_rows
from tests.integration.reliability_support import config_path_root, metric, reliability_root

pytestmark = pytest.mark.integration
PATIENTS = 8
WAITS = "drop folder waits"  # the log line of a file waiting for its model


def _folders(agent: AgentProcess) -> dict[str, Path]:
    section = yaml.safe_load(agent.config_path.read_text())["drop_folder"]
    return {
        name: (agent.config_path.parent / section[name]).resolve()
        for name in ("inbox", "outbox", "processed", "failed")
    }


def _drop(inbox: Path, name: str, data: bytes) -> None:
    temp = inbox / f".{name}.part"
    temp.write_bytes(data)
    os.rename(temp, inbox / name)


def _read(path: Path) -> Any:
    return path.exists() and json.loads(path.read_text())


@pytest.fixture
def unpulled(tmp_path: Path) -> Iterator[tuple[AgentProcess, Path]]:
    """The agent with live performance on and its registry not there yet."""

    def edit(config: dict[str, Any]) -> None:
        config["registries"][0].update(poll_interval=1.0, backoff_max=2.0)
        config["drop_folder"]["retry_seconds"] = 1.0
        config["performance"] = {"enabled": True}

    config_path = reliability_root(tmp_path, edit=edit)
    registry = config_path_root(tmp_path) / "registry"
    shutil.rmtree(registry)
    agent = start_agent(config_path, up_path="/healthz")
    try:
        yield agent, registry
    finally:
        assert agent.stop() == 0, agent.log_text()


def test_an_outcome_file_dropped_before_the_model_is_pulled_waits_and_joins(
    unpulled: tuple[AgentProcess, Path],
) -> None:
    agent, registry = unpulled
    folders = _folders(agent)
    observed = datetime.now(UTC) - timedelta(hours=1)
    records = [patient_resources(row, observed_at=observed.isoformat()) for row in reference_rows()]
    records = records[:PATIENTS]
    _drop(
        folders["inbox"],
        "ward.ndjson",
        b"".join(json.dumps(r).encode() + b"\n" for rs in records for r in rs),
    )
    wait_for(lambda: WAITS in agent.log_text(), 30)

    known = (datetime.now(UTC) + timedelta(minutes=1)).isoformat(timespec="seconds")
    patients = [f"Patient/{resources[0]['id']}" for resources in records]
    outcomes = "patient,as_of,label\n" + "".join(
        f"{p},{known},{i % 2}\n" for i, p in enumerate(patients)
    )
    _drop(folders["inbox"], "outcomes.csv", outcomes.encode())
    wait_for(lambda: list(folders["inbox"].iterdir()) == [], 30)  # claimed
    claimed = agent.log_text().count(WAITS)
    wait_for(lambda: agent.log_text().count(WAITS) >= claimed + 2, 30)  # retried since
    assert not (folders["outbox"] / "outcomes.csv.report.json").exists()
    assert list(folders["processed"].iterdir()) == []

    shutil.copytree(REPO / "fixtures/registry", registry)  # the registry comes up
    report = wait_for(lambda: _read(folders["outbox"] / "outcomes.csv.report.json"), 60)
    results = (folders["outbox"] / "ward.ndjson.results.ndjson").read_text().splitlines()
    scored = [json.loads(line)["label"] for line in results if json.loads(line)["status"] == "ok"]
    assert len(scored) >= PATIENTS // 2
    assert (report["rows"], report["recorded"], report["refused"]) == (PATIENTS, PATIENTS, {})
    assert report["joined"] == len(scored) and report["interrupted"] == []
    moved = folders["processed"] / "outcomes.csv"  # moved just after the report is written
    wait_for(moved.exists, 10)
    assert moved.read_text() == outcomes
    with agent.client() as client:
        text = client.get("/metrics").text
    assert metric(text, "edge_agent_outcomes_total", model="deterioration") == PATIENTS  # once


def test_an_outcome_file_while_live_performance_is_off_goes_to_failed(tmp_path: Path) -> None:
    agent = start_agent(reliability_root(tmp_path))
    try:
        folders = _folders(agent)
        outcomes = b"patient,as_of,label\nPatient/p1,2026-03-16T08:00:00Z,1\n"
        _drop(folders["inbox"], "outcomes.csv", outcomes)
        report = wait_for(lambda: _read(folders["failed"] / "outcomes.csv.error.json"), 30)
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert (report["kind"], report["reason"], report["models"]) == ("outcomes", "not_enabled", {})
    assert (folders["failed"] / "outcomes.csv").read_bytes() == outcomes
    assert list(folders["outbox"].iterdir()) == []
