"""Batch scoring: records/s through the agent's drop folder against a loop in each peer.

The agent gets one NDJSON file of N one-patient Bundles renamed into the inbox of the
running process, and the clock stops when the run report appears in the outbox (parse,
validate, map, score, journal with fsync, the NDJSON/CSV/RiskAssessment outputs). The
drop folder scores at *now*, so the agent's copies have their observation times moved
forward by whole hours; the peers score the unshifted copies at ``AS_OF``. A peer's loop
is what its team would write: validate and map each Bundle, then one ``predict`` over the
whole matrix (the cheapest way for scikit-learn and onnxruntime), no files written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.inputs import AS_OF, AS_OF_TEXT, patient_bundles
from bench.peers.sklearn_service import Predictor, score_bundle


def drop_folder_seconds(inbox: Path, outbox: Path, count: int, timeout: float) -> float:
    """Seconds from the rename into ``inbox`` to the run report of ``count`` records."""
    hours = (datetime.now(UTC) - AS_OF) // timedelta(hours=1)
    lines = patient_bundles(count, shift=timedelta(hours=hours))
    name = f"bench-{count}-{time.time_ns()}.ndjson"
    staging = inbox / f".{name}.tmp"
    staging.write_bytes(b"\n".join(lines) + b"\n")
    started = time.perf_counter()
    staging.rename(inbox / name)
    report = outbox / f"{name}.report.json"
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if report.exists():
            elapsed = time.perf_counter() - started
            scored = json.loads(report.read_text())["records"]
            if scored["ok"] != count:
                raise RuntimeError(f"drop folder scored {scored['ok']} of {count} records")
            return elapsed
        time.sleep(0.005)
    raise RuntimeError(f"no drop-folder report for {count} records within {timeout} s")


@dataclass(frozen=True)
class Elapsed:
    wall: float  # seconds
    cpu: float  # seconds of this thread's CPU time


def peer_loop_seconds(medians: dict[str, float], predict: Predictor, count: int) -> Elapsed:
    """Time for a peer to validate, map and score ``count`` Bundles in process."""
    bodies = patient_bundles(count)
    wall, cpu = time.perf_counter(), time.thread_time()
    rows = [score_bundle(body, AS_OF_TEXT, medians) for body in bodies]
    predict(rows)
    return Elapsed(time.perf_counter() - wall, time.thread_time() - cpu)
