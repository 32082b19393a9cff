"""Sustained loopback traffic on the real `edge-agent serve` process, with a model swap in
the middle: FHIR Bundles, HL7 v2 messages and Open Inference Protocol vectors over HTTP from
several client threads, and HL7 v2 over MLLP from one more; halfway through, version 1.0.1
of the demo bundle (re-signed with the demo key) is published to the registry the agent
polls every second.

Passes when no request failed, the swap happened, and resident memory grew by less than
``RSS_GROWTH_MAX_KIB`` between the end of the warm-up and the end of the run.

Bounded in time and count: ``EDGE_AGENT_LOAD_SECONDS`` (default 20) seconds of traffic,
at most ``REQUESTS_MAX`` requests, 127.0.0.1 only. The soak run (docs/reliability.md) is
the same test for 10 minutes::

    EDGE_AGENT_LOAD_SECONDS=600 .venv/bin/pytest tests/integration/test_load.py -s
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.agent_process import start_agent
from tests.integration.reliability_support import (
    DEMO_KEY,
    DEMO_VECTOR,
    FHIR,
    HL7,
    ORU,
    PATIENT_BUNDLE,
    PREDICT,
    config_path_root,
    oip_body,
    publish_to,
    recent_oru,
    reliability_root,
    rss_kib,
    served_version,
    wait_for,
    wat_bundle,
)

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("EDGE_AGENT_LOAD_SECONDS", "20"))
WARMUP_SECONDS = min(5.0, SECONDS / 4)
CLIENTS = 4
REQUESTS_MAX = 2_000_000
RSS_GROWTH_MAX_KIB = 64 * 1024


@dataclass
class Tally:
    """What the clients saw; appended to from several threads (list.append is atomic)."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[tuple[str, int | str]] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)
    count: int = 0  # approximate (unlocked): only bounds the run


def _requests() -> list[tuple[str, str, bytes, dict[str, str]]]:
    oip = json.dumps(oip_body([DEMO_VECTOR])).encode()
    return [
        ("fhir", PREDICT, PATIENT_BUNDLE, FHIR),
        ("hl7", PREDICT, ORU, HL7),
        ("oip", "/v2/models/deterioration/infer", oip, {"Content-Type": "application/json"}),
    ]


def _client(base_url: str, deadline: float, tally: Tally, offset: int) -> None:
    kinds = _requests()
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        i = offset
        while time.monotonic() < deadline and tally.count < REQUESTS_MAX:
            kind, path, body, headers = kinds[i % len(kinds)]
            i += 1
            started = time.perf_counter()
            try:
                response = client.post(path, content=body, headers=headers)
            except httpx.TransportError as exc:
                tally.failures.append((kind, type(exc).__name__))
                continue
            elapsed = time.perf_counter() - started
            tally.count += 1
            if response.status_code != 200:
                tally.failures.append((kind, response.status_code))
                continue
            tally.latencies.setdefault(kind, []).append(elapsed)
            answer: dict[str, Any] = response.json()
            tally.versions[str(answer.get("version") or answer.get("model_version"))] += 1


def _mllp_client(port: int, deadline: float, tally: Tally) -> None:
    """One MLLP connection sending the demo ORU^R01 (moved to now: MLLP scores as of the
    current time), asking for enhanced-mode acks (MSH-15 and MSH-16 AL): each message gets
    a commit ack (CA), then the application ack with the score; anything but CA then AA
    is a failure."""
    message = recent_oru()
    assert b"|P|2.5|||AL|NE" in message
    frame = b"\x0b" + message.replace(b"|P|2.5|||AL|NE", b"|P|2.5|||AL|AL") + b"\x1c\r"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        buffer = b""

        def next_code() -> str:
            nonlocal buffer
            while b"\x1c\r" not in buffer:
                chunk = connection.recv(65536)
                if not chunk:
                    return "closed"
                buffer += chunk
            ack, buffer = buffer.split(b"\x1c\r", 1)
            msa = next((s for s in ack.split(b"\r") if s.startswith(b"MSA|")), b"MSA|none")
            return msa.split(b"|")[1].decode()

        while time.monotonic() < deadline and tally.count < REQUESTS_MAX:
            started = time.perf_counter()
            connection.sendall(frame)
            codes = [next_code()]
            if codes[0] == "CA":
                codes.append(next_code())
            elapsed = time.perf_counter() - started
            tally.count += 1
            if codes != ["CA", "AA"]:
                tally.failures.append(("mllp", "/".join(codes)))
                if "closed" in codes:
                    return
                continue
            tally.latencies.setdefault("mllp", []).append(elapsed)


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def test_sustained_mixed_traffic_with_a_model_swap(tmp_path: Path) -> None:
    config = reliability_root(tmp_path, edit=lambda c: c["registries"][0].update(poll_interval=1.0))
    registry = config_path_root(tmp_path) / "registry"
    next_bundle = wat_bundle(tmp_path / "b101", "1.0.1", DEMO_KEY)
    mllp_port = yaml.safe_load(config.read_text())["mllp"]["port"]
    agent = start_agent(config)
    tally = Tally()
    try:
        started = time.monotonic()
        deadline = started + SECONDS
        clients = [
            threading.Thread(target=_client, args=(agent.base_url, deadline, tally, n))
            for n in range(CLIENTS)
        ] + [threading.Thread(target=_mllp_client, args=(mllp_port, deadline, tally))]
        for thread in clients:
            thread.start()
        time.sleep(WARMUP_SECONDS)
        rss_start = rss_kib(agent.process.pid)
        time.sleep(max(0.0, started + SECONDS / 2 - time.monotonic()))
        publish_to(registry, next_bundle, DEMO_KEY)
        swapped_at = time.monotonic() - started
        with agent.client() as client:
            wait_for(lambda: served_version(client) == "1.0.1", 15, "the swap to 1.0.1")
        swap_seconds = time.monotonic() - started - swapped_at
        for thread in clients:
            thread.join(SECONDS + 30)
        elapsed = time.monotonic() - started
        rss_end = rss_kib(agent.process.pid)
    finally:
        assert agent.stop() == 0, agent.log_text()
    every = [x for values in tally.latencies.values() for x in values]
    report = {
        "seconds": round(elapsed, 1),
        "clients": f"{CLIENTS} http + 1 mllp",
        "requests": len(every) + len(tally.failures),
        "per_second": round((len(every) + len(tally.failures)) / elapsed, 1),
        "failed": len(tally.failures),
        "p50_ms": round(_p(every, 0.5) * 1000, 2),
        "p99_ms": round(_p(every, 0.99) * 1000, 2),
        "p99_ms_by_kind": {k: round(_p(v, 0.99) * 1000, 2) for k, v in tally.latencies.items()},
        "max_ms": round(max(every) * 1000, 1),
        "versions": dict(tally.versions),
        "swap_published_at_s": round(swapped_at, 1),
        "swap_live_after_s": round(swap_seconds, 1),
        "rss_start_kib": rss_start,
        "rss_end_kib": rss_end,
        "rss_growth_kib": rss_end - rss_start,
    }
    print("load report:", json.dumps(report))
    assert tally.failures == [], Counter(tally.failures)
    assert tally.versions["1.0.0"] > 0 and tally.versions["1.0.1"] > 0
    assert set(tally.latencies) == {"fhir", "hl7", "oip", "mllp"}
    assert rss_end - rss_start < RSS_GROWTH_MAX_KIB, report
