"""A second version earns its place on the real process: published under ``rollout: shadow``
it becomes the candidate, scores every record beside the active version off the request
path, and is compared as it runs; every answer still comes from the active version and none
fails. A gate blocks ``models promote`` by name; a forced promotion with a reason serves the
candidate and is audited. What the shadow lane costs an answer is a benchmark's question
(machines here are shared and noisy), not this test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agent_process import REPO, AgentProcess, start_agent
from tests.integration.reliability_support import (
    DEMO_KEY,
    DEMO_VECTOR,
    FHIR,
    HL7,
    ORU,
    PREDICT,
    config_path_root,
    metric,
    oip_body,
    publish_to,
    reliability_root,
    wait_for,
    wat_bundle,
)
from tests.rollout.rollout_support import CANDIDATE_WAT, patient_bundle

pytestmark = pytest.mark.integration

MODEL = "deterioration"
ROUNDS = 200  # one FHIR, one HL7 v2, one OIP request each
WARM_UP = 20


def _config(tmp_path: Path) -> Path:
    def edit(config: dict[str, Any]) -> None:
        config["registries"][0]["poll_interval"] = 1.0
        model = config["models"][0]
        model["rollout"] = "shadow"
        model["gates"] = {"min_records": 100, "max_disagreement": 1.0, "min_days": 7}
        config["drop_folder"]["enabled"] = False
        config["mllp"]["enabled"] = False

    return reliability_root(tmp_path, edit=edit)


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "models", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )


def _requests(index: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """One round of mixed traffic: a FHIR Bundle for a new patient (one in ten with a
    heart rate the candidate traps on), the demo ORU^R01, one OIP feature vector."""
    rate = 180.0 if index % 10 == 0 else 50.0 + index % 110
    return [
        (PREDICT, patient_bundle(index, rate).encode(), FHIR),
        (PREDICT, ORU, HL7),
        (
            f"/v2/models/{MODEL}/infer",
            json.dumps(oip_body([DEMO_VECTOR])).encode(),
            {"Content-Type": "application/json"},
        ),
    ]


def _versions(response: httpx.Response) -> set[str]:
    body = response.json()
    if "model_version" in body:  # Open Inference Protocol
        return {body["model_version"]}
    return {p["version"] for p in body["predictions"]}


def test_a_shadow_candidate_is_compared_without_touching_any_answer(tmp_path: Path) -> None:
    shadowed = start_agent(_config(tmp_path / "with"))
    try:
        registry = config_path_root(tmp_path / "with") / "registry"
        bundle = wat_bundle(tmp_path / "candidate", "1.0.1", DEMO_KEY, CANDIDATE_WAT)
        publish_to(registry, bundle, DEMO_KEY)
        with shadowed.client() as client:
            wait_for(
                lambda: (
                    metric(
                        client.get("/metrics").text, "edge_agent_candidate_info", version="1.0.1"
                    )
                    == 1
                ),
                30,
                "1.0.1 staged as the candidate",
            )
            (served,) = client.get("/v1/models").json()["models"]
            assert served["version"] == "1.0.0"  # staging changed nothing that answers
        _drive(shadowed)
        with shadowed.client() as client:
            _check_comparison(client)
            page = client.get("/").text
            assert "candidate-version'>1.0.1 (shadow)" in page
            assert "class='distributions'" in page
        _promote(shadowed)
    finally:
        assert shadowed.stop() == 0, shadowed.log_text()


def _drive(shadowed: AgentProcess) -> None:
    """Every request, each answered 200 by the active version while the candidate scores
    in the shadow lane. (What the lane costs an answer is measured in bench/, not here.)"""
    with shadowed.client() as client:
        for index in range(WARM_UP + ROUNDS):
            for path, body, headers in _requests(index):
                response = client.post(path, content=body, headers=headers)
                assert response.status_code == 200, response.text
                assert _versions(response) == {"1.0.0"}


def _check_comparison(client: httpx.Client) -> None:
    requests = 3 * (WARM_UP + ROUNDS)
    traps = sum(1 for i in range(WARM_UP + ROUNDS) if i % 10 == 0)

    def settled() -> bool:
        text = client.get("/metrics").text
        compared = metric(text, "edge_agent_candidate_compared_records_total", model=MODEL)
        skipped = metric(text, "edge_agent_candidate_skipped_records_total", model=MODEL)
        return compared + skipped >= requests

    wait_for(settled, 60, "the shadow lane to catch up with every answered record")
    text = client.get("/metrics").text
    assert metric(text, "edge_agent_errors_total", model=MODEL) == 0
    skipped = metric(text, "edge_agent_candidate_skipped_records_total", reason="refused")
    assert skipped == traps  # the candidate trapped on those: counted, never an answer's fault
    assert metric(text, "edge_agent_candidate_skipped_records_total", reason="queue_full") == 0
    assert metric(text, "edge_agent_candidate_compared_records_total") == requests - traps
    assert 'edge_agent_candidate_score_correlation{model="deterioration"}' in text
    assert metric(text, "edge_agent_candidate_score_abs_difference", statistic="mean") > 0
    assert 'edge_agent_candidate_score_psi{model="deterioration"}' in text
    for threshold in ("warning", "critical"):
        assert f'threshold="{threshold}"' in text
    assert metric(text, "edge_agent_candidate_latency_seconds", role="candidate", statistic="p99")
    assert metric(text, "edge_agent_predictions_total", version="1.0.1") == 0


def _promote(agent: AgentProcess) -> None:
    compare = _cli(agent.config_path, "compare", MODEL)
    assert compare.returncode == 0, compare.stderr
    assert "records compared:" in compare.stdout and "FAIL min_days" in compare.stdout
    blocked = _cli(agent.config_path, "promote", MODEL)
    assert blocked.returncode == 1 and "min_days" in blocked.stderr, blocked.stderr
    unforced = _cli(agent.config_path, "promote", MODEL, "--force")
    assert unforced.returncode == 2 and "--reason" in unforced.stderr
    forced = _cli(agent.config_path, "promote", MODEL, "--force", "--reason", "committee 2026-12")
    assert forced.returncode == 0, forced.stderr
    with agent.client() as client:
        (served,) = client.get("/v1/models").json()["models"]
        assert served["version"] == "1.0.1"
        assert "edge_agent_candidate_info{" not in client.get("/metrics").text
    listing = _cli(agent.config_path, "list")
    assert "*1.0.1" in listing.stdout and "candidate" not in listing.stdout
    audit = (agent.root / "var/demo/audit.jsonl").read_text().splitlines()
    (event,) = [e for e in map(json.loads, audit) if e.get("event") == "promotion"]
    assert event["version"] == "1.0.1" and event["previous_version"] == "1.0.0"
    assert event["forced"] is True and event["reason"] == "committee 2026-12"
    assert event["comparison"]["records"] >= 100
    assert {g["name"] for g in event["gates"] if not g["passed"]} == {"min_days"}
    history = _cli(agent.config_path, "history", MODEL)
    assert history.returncode == 0, history.stderr
    lines = [line.split() for line in history.stdout.splitlines()]
    assert [line[1:3] for line in lines] == [
        ["activation", "1.0.0"],  # the first pull at start
        ["staging", "1.0.1"],
        ["promotion", "1.0.1"],
    ], history.stdout
    # a second after staging (the lines show whole seconds; traffic ran for longer)
    between = datetime.fromisoformat(lines[1][0]) + timedelta(seconds=1)
    then = _cli(agent.config_path, "history", MODEL, "--at", between.isoformat())
    assert "active 1.0.0, candidate 1.0.1" in then.stdout, then.stdout
