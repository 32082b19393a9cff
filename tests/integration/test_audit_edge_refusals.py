"""What the HTTP edge refuses reaches the real process's audit log, compactly and without
the token, the body or the path as sent; and a flood of 401s, coalesced per client and
second, cannot rotate earlier entries away (docs/operations.md, "The audit log")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.limits import Limits
from tests.integration.agent_process import AgentProcess, demo_root, start_agent
from tests.integration.reliability_support import FHIR, PATIENT_BUNDLE, PREDICT, metric, wait_for

pytestmark = pytest.mark.integration

TOKEN = "edge-audit-token-never-written"
SECRET = "DoeJane-MRN004217"  # what an attacker might put in a URL
BODY_MARK = b"BODY-TEXT-NEVER-AUDITED"
DROPPED = "edge_agent_audit_entries_dropped_total"
PEERS = 60  # loopback source addresses 127.0.0.2...: one client each
PER_PEER = 50


def _with_token(config: dict[str, Any], window: float | None = None) -> None:
    config["http"]["bearer_token_sha256"] = [hashlib.sha256(TOKEN.encode()).hexdigest()]
    config["limits"] = {"http_body_max": 100_000}
    if window is not None:
        config["limits"]["audit_refusal_window"] = window


def _folder(agent: AgentProcess) -> Path:
    return agent.config_path.parent / "../var/demo"


def _entries(folder: Path) -> list[dict[str, Any]] | None:
    """Every entry of every audit file (none of which may hold the token, the path text or
    the body); None while a rotation renames one under us or a line is half written."""
    try:
        texts = [f.read_text() for f in sorted(folder.glob("audit.jsonl*"))]
        assert not any(TOKEN in t or SECRET in t or BODY_MARK.decode() in t for t in texts)
        return [json.loads(line) for t in texts for line in t.splitlines()]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_a_wrong_token_an_oversize_body_and_a_long_head_are_audited(tmp_path: Path) -> None:
    agent = start_agent(demo_root(tmp_path, _with_token))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with agent.client() as client:
            scored = client.post(
                PREDICT, content=PATIENT_BUNDLE, headers={**FHIR, **auth, "X-Request-Id": "ok-1"}
            )
            wrong = client.post(
                PREDICT,
                content=BODY_MARK,
                headers={**FHIR, "Authorization": f"Bearer {TOKEN}x", "X-Request-Id": "bad-1"},
            )
            large = client.post(
                f"/v1/models/{SECRET}/predict",
                content=BODY_MARK * 10_000,
                headers={**FHIR, **auth, "X-Request-Id": "big-1"},
            )
        long_head = f"POST /{SECRET} HTTP/1.1\r\nX-Pad: {'p' * Limits().http_header_max}\r\n\r\n"
        head = agent.exchange([long_head.encode()])
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert (scored.status_code, wrong.status_code, large.status_code) == (200, 401, 413)
    assert head.startswith(b"HTTP/1.1 431")
    entries = {e.get("request_id"): e for e in _entries(_folder(agent)) or [] if "event" not in e}
    assert entries["ok-1"]["outcome"] == "ok" and "input_hmac" in entries["ok-1"]
    token_id = f"token:{hashlib.sha256(TOKEN.encode()).hexdigest()[:12]}"
    assert entries["ok-1"]["caller"] == token_id
    assert {k: v for k, v in entries["bad-1"].items() if k != "time"} == {
        "request_id": "bad-1",
        "intake": "http",
        "caller": "127.0.0.1",
        "token": "wrong",
        "route": "/v1/models/{name}/predict",
        "model": "deterioration",
        "outcome": "unauthorized",
    }
    assert {k: v for k, v in entries["big-1"].items() if k != "time"} == {
        "request_id": "big-1",
        "intake": "http",
        "caller": "127.0.0.1",
        "token": token_id,
        "route": "/v1/models/{name}/predict",
        "outcome": "request_too_large",
    }
    [cut] = [e for e in entries.values() if e["outcome"] == "request_head_too_large"]
    assert (cut["route"], cut["caller"]) == ("unmatched", "127.0.0.1")


def test_a_401_flood_keeps_earlier_entries_and_counts_what_it_drops(tmp_path: Path) -> None:
    """3,000 requests without a token from 60 addresses. The window is set long, so each
    address writes exactly one entry during the flood (its first 401), and its repeats one
    more at the stop: the written and dropped entries can then be counted exactly. Files of
    1 kB, all younger than an hour, 6 at most: the flood fills them, then its entries are
    dropped, and the scoring before it stays."""

    def edit(config: dict[str, Any]) -> None:
        _with_token(config, window=3600.0)
        config["audit"].update(max_bytes=1_000, min_age_seconds=3600, max_files=6)

    agent = start_agent(demo_root(tmp_path, edit))
    folder = _folder(agent)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with agent.client() as client:
            scored = client.post(
                PREDICT, content=PATIENT_BUNDLE, headers={**FHIR, **auth, "X-Request-Id": "first"}
            )
        statuses: set[int] = set()
        for peer in range(2, 2 + PEERS):
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{peer}")
            with httpx.Client(base_url=agent.base_url, transport=transport) as flooder:
                statuses |= {flooder.post(PREDICT).status_code for _ in range(PER_PEER)}
        text = ""

        def settled() -> bool:
            nonlocal text
            with agent.client() as client:
                text = client.get("/metrics", headers=auth).text
            edge = [e for e in _entries(folder) or [] if e.get("outcome") == "unauthorized"]
            return len(edge) + metric(text, DROPPED) == PEERS

        wait_for(settled, 20, "one entry per flooding address written or dropped")
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert scored.status_code == 200 and statuses == {401}
    labels = {"model": "deterioration", "intake": "http", "reason": "unauthorized"}
    assert metric(text, "edge_agent_errors_total", **labels) == PEERS * PER_PEER
    assert metric(text, DROPPED) > 0 and metric(text, "edge_agent_audit_pressure") == 1
    entries = _entries(folder) or []
    assert len(list(folder.glob("audit.jsonl*"))) == 6
    assert "first" in {e.get("request_id") for e in entries}
    edge = [e for e in entries if e.get("outcome") == "unauthorized"]
    assert edge and all(e["token"] == "absent" and "input_hmac" not in e for e in edge)
