"""One side of ``bench.before_after``: the request path's stages, timed in a tree of the
agent's source (the working tree, or an earlier commit's copy), on command.

Run as a file with the tree first on ``PYTHONPATH`` and as the working directory; it uses
only interfaces every compared version has. Reads a line per round from stdin ("stop" ends)
and answers one JSON line: CPU microseconds per call of each stage (this thread's time: what
the request path pays; the rows named "whole process" add the writer threads, which write
the audit log and the prediction store off that path where the version has them).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def _per_call(fn: Callable[[], object], calls: int) -> float:
    started = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - started) / calls * 1e6


def _per_call_process(fn: Callable[[], object], calls: int, settle: Callable[[], object]) -> float:
    """CPU of the whole process per call, the writer threads' included: what a stage
    queued is written (``settle``) before the clock stops."""
    started = time.process_time()
    for _ in range(calls):
        fn()
    settle()
    return (time.process_time() - started) / calls * 1e6


def main() -> int:
    from datetime import timedelta

    from agent.jsontext import load_json
    from agent.performance.store import PredictionStore
    from agent.records import parse_records
    from agent.types import IntakePath, RecordFormat, ScoreRequest
    from bench.inputs import AS_OF, demo_bundle
    from bench.micro import agent_pipeline
    from tests.integration.agent_process import demo_root

    calls = int(sys.argv[1])
    workdir = Path(tempfile.mkdtemp(prefix="edge-stages-"))
    pipeline = agent_pipeline(demo_root(workdir))  # the demo config as that version ships it
    served = pipeline.served("deterioration")
    body = demo_bundle()
    limits, records = pipeline.limits, pipeline.config.records
    record = parse_records(body, RecordFormat.fhir_json, limits=limits, config=records)[0]
    vector = served.mapping.extract(record, AS_OF)
    outputs = served.outputs(served.runtime.predict([vector.values])[0])
    request = ScoreRequest(
        model="deterioration",
        body=body,
        format=RecordFormat.fhir_json,
        intake=IntakePath.http,
        as_of=AS_OF,
        caller="bench",
        request_id="bench",
    )
    pipeline.start()  # as the daemon runs it (writer threads, where the version has them)
    audit = pipeline.audit
    if audit is None:
        raise RuntimeError("the demo config has no audit log")
    store = PredictionStore(
        workdir / "predictions.sqlite",
        b"k" * 32,
        retention=timedelta(days=90),
        max_rows=1_000_000,
        horizon=timedelta(hours=48),
    )
    getattr(store, "start", lambda: None)()
    now = datetime.now(UTC)

    def audit_record() -> None:
        audit.record(
            request_id="bench",
            intake="http",
            caller="bench",
            model=served.name,
            version=served.version,
            bundle_digest=served.digest,
            body=body,
            outputs=[outputs],
            seconds=2e-4,
            outcome="ok",
        )

    def store_insert() -> None:
        store.record(served.name, served.version, [("Patient/bench", now, 0.25)])

    settle: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "audit record, whole process": (audit_record, getattr(audit, "flush", lambda: None)),
        "prediction store insert, whole process": (
            store_insert,
            lambda: store.labelled(served.name, 1),  # a read waits for what is queued
        ),
    }
    stages: dict[str, Callable[[], object]] = {
        "json": lambda: load_json(body, "body"),
        "parse": lambda: parse_records(body, RecordFormat.fhir_json, limits=limits, config=records),
        "extract": lambda: served.mapping.extract(record, AS_OF),
        "monitor": lambda: pipeline.monitor.observe(
            served.name,
            served.version,
            IntakePath.http,
            vector,
            outputs,
            mapping_seconds=1e-4,
            inference_seconds=1e-5,
            total_seconds=2e-4,
        ),
        "audit record": audit_record,
        "prediction store insert": store_insert,
        "score": lambda: pipeline.score(request),
    }
    for fn in stages.values():
        fn()
    print(json.dumps({"ready": records.model_dump(mode="json")}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
        measured = {k: _per_call(fn, calls) for k, fn in stages.items()}
        for k, (fn, done) in settle.items():
            measured[k] = _per_call_process(fn, calls, done)
        print(json.dumps(measured), flush=True)
    pipeline.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
