"""The model a request names is recorded only if configured, and a reload's models from
its first request on: the pipeline keeps the configured names as a set per config, not a
scan per request, so a reload must not leave it on the old set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.errors import AgentError
from agent.pipeline import ScoringPipeline
from agent.registry.updater import build_updater
from agent.types import IntakePath, RecordFormat, ScoreRequest
from tests.integration.agent_process import demo_root


def _audited_model(pipeline: ScoringPipeline, model: str, audit: Path) -> object:
    """The model named by the audit entry of a request for ``model`` (refused: not served)."""
    request = ScoreRequest(model, b"{}", RecordFormat.fhir_json, IntakePath.http)
    with pytest.raises(AgentError):  # unknown before the reload, not loaded after it
        pipeline.score(request)
    last = audit.read_text().splitlines()[-1]
    return json.loads(last)["model"]


def test_a_model_added_by_a_reload_is_named_from_its_first_request(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    def second_model(config: dict[str, Any]) -> None:
        config["models"].append({**config["models"][0], "name": "sepsis"})

    before = load_config(demo_root(tmp_path_factory.mktemp("labels")))
    after = load_config(demo_root(tmp_path_factory.mktemp("labels-reloaded"), second_model))
    pipeline = ScoringPipeline.from_config(before)
    build_updater(before, pipeline).pull_once()
    audit = before.audit.path  # the log opened at start, kept across reloads
    assert audit is not None
    assert _audited_model(pipeline, "sepsis", audit) == "unknown"
    pipeline.reconfigure(after)
    assert _audited_model(pipeline, "sepsis", audit) == "sepsis"
