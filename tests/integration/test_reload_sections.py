"""What a reload (SIGHUP) applies and what waits for a restart, on the real process: a
bearer token removed from the config is refused from the reload on (the guard reads the
tokens per request), while a section built at start (the MLLP listener, the limits, a
listener setting of ``http``) keeps running as it was, and the log names it, so that
"configuration reloaded" never hides a change that did not happen."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.agent_process import AgentProcess, start_agent
from tests.integration.reliability_support import reliability_root, wait_for

pytestmark = pytest.mark.integration

OLD, NEW = "edge-reload-token-old", "edge-reload-token-new"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _edit(agent: AgentProcess, change: Any) -> None:
    config = yaml.safe_load(agent.config_path.read_text())
    change(config)
    agent.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def _reload(agent: AgentProcess) -> list[dict[str, Any]]:
    """SIGHUP; the log lines the reload wrote, once it says it is done."""
    before = len(agent.log_text().splitlines())
    agent.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: "configuration reloaded" in "\n".join(agent.log_text().splitlines()[before:]),
        15,
        "the reload",
    )
    lines = agent.log_text().splitlines()[before:]
    return [json.loads(line) for line in lines if line.startswith("{")]


def _status(agent: AgentProcess, token: str) -> int:
    with agent.client() as client:
        return client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code


def test_a_removed_token_is_refused_at_once_and_a_changed_listener_is_named(
    tmp_path: Path,
) -> None:
    def tokens(config: dict[str, Any]) -> None:
        config["http"]["bearer_token_sha256"] = [_digest(OLD)]

    agent = start_agent(reliability_root(tmp_path, tokens))
    try:
        assert (_status(agent, OLD), _status(agent, NEW)) == (200, 401)

        def rotate(config: dict[str, Any]) -> None:
            config["http"]["bearer_token_sha256"] = [_digest(NEW)]
            config.setdefault("limits", {})["request_timeout"] = 7
            config["mllp"]["max_connections"] = 3

        unchanged = _reload(agent)  # the same file: nothing waits for a restart
        assert not [line for line in unchanged if line.get("sections")]
        _edit(agent, rotate)
        lines = _reload(agent)
        assert (_status(agent, OLD), _status(agent, NEW)) == (401, 200)
        [pending] = [line for line in lines if line.get("sections")]
        assert pending["level"] == "warning" and pending["sections"] == "mllp, limits"

        def move_and_rotate(config: dict[str, Any]) -> None:
            config["http"]["bearer_token_sha256"] = [_digest(OLD)]
            config["http"]["max_concurrent_per_client"] = 2

        _edit(agent, move_and_rotate)
        lines = _reload(agent)
        # another http setting changed too: the whole section waits for the restart, tokens
        # included, so the running listener never pairs its old settings with new tokens
        assert (_status(agent, OLD), _status(agent, NEW)) == (401, 200)
        assert [line["sections"] for line in lines if line.get("sections")] == [
            "http, mllp, limits"
        ]
    finally:
        assert agent.stop() == 0, agent.log_text()
