"""A flood of refused requests on the real process cannot rotate earlier audit entries away
(issue 18: 5,400 requests in 10 s erased every earlier entry): young files are kept up to
``audit.max_files``, then new entries are dropped and counted, and ``/metrics`` says the
audit log is under pressure. Refused requests are written compactly. The writer thread
writes just after the answers, so the counts are read once every entry is written or
dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_process import demo_root, start_agent
from tests.integration.reliability_support import FHIR, PATIENT_BUNDLE, PREDICT, metric, wait_for

pytestmark = pytest.mark.integration

MAX_FILES = 8
FLOOD = 300
DROPPED = "edge_agent_audit_entries_dropped_total"


def _entries(folder: Path) -> list[dict[str, Any]] | None:
    """Every entry of every audit file; None while a rotation renames one under us or a
    line is half written."""
    try:
        files = sorted(folder.glob("audit.jsonl*"))
        return [json.loads(line) for f in files for line in f.read_text().splitlines()]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_a_flood_of_refused_requests_keeps_earlier_audit_entries(tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["audit"].update(max_bytes=1_000, min_age_seconds=3600, max_files=MAX_FILES)

    agent = start_agent(demo_root(tmp_path, edit))
    folder = agent.config_path.parent / "../var/demo"
    try:
        with agent.client() as client:
            scored = client.post(
                PREDICT,
                content=PATIENT_BUNDLE,
                headers={**FHIR, "X-Request-Id": "before-the-flood"},
            )
            refused = [
                client.post(PREDICT, content=b'{"resourceType": "Basic"}', headers=FHIR)
                for _ in range(FLOOD)
            ]
            text = ""

            def settled() -> bool:
                nonlocal text
                text = client.get("/metrics").text
                entries = _entries(folder)
                scorings = [e for e in entries or [] if "event" not in e]
                return entries is not None and len(scorings) + metric(text, DROPPED) == FLOOD + 1

            wait_for(settled, 20, "every audit entry written or dropped")
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert scored.status_code == 200
    assert {r.status_code for r in refused} - {400, 422} == set()
    entries = _entries(folder) or []
    assert len(list(folder.glob("audit.jsonl*"))) == MAX_FILES
    scorings = [e for e in entries if "event" not in e]  # not the model lifecycle events
    assert "before-the-flood" in {e["request_id"] for e in scorings}  # before: rotated away
    refusals = [e for e in scorings if e["outcome"] != "ok"]
    assert refusals and all("outputs" not in e and "bundle_digest" not in e for e in refusals)
    dropped = metric(text, DROPPED)
    assert dropped > 0 and len(refusals) + dropped == FLOOD
    assert metric(text, "edge_agent_audit_pressure") == 1


def test_a_stop_right_after_the_answers_loses_no_audit_entry(tmp_path: Path) -> None:
    """Answers go out before their entries are written (the writer thread); SIGTERM sent
    the moment the last answer arrives must still leave every entry in the file."""
    agent = start_agent(demo_root(tmp_path))
    folder = agent.config_path.parent / "../var/demo"
    ids = [f"drain-{n}" for n in range(200)]
    try:
        with agent.client() as client:
            answers = [
                client.post(PREDICT, content=PATIENT_BUNDLE, headers={**FHIR, "X-Request-Id": i})
                for i in ids
            ]
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert {a.status_code for a in answers} == {200}
    written = [e.get("request_id") for e in _entries(folder) or [] if "event" not in e]
    assert written == ids
