"""In-process micro-benchmarks of the request path, agent against the peers' code.

Each figure is the median over 5 repeats of the mean *CPU time* (this thread's) per call, on
the inputs of ``bench.inputs``: on a shared machine a neighbour delays wall-clock time but
hardly this thread's CPU time. The agent's pipeline is the real one, built from the demo
config with its bundle pulled and verified, audit log and monitor included, and started as
the daemon starts it: its audit entries are written by the writer thread (ADR 0011), so the
whole-request rows are given twice, the request thread's CPU (what delays the answer) and the
process's (writer threads included: what the machine pays).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from agent.config import load_config
from agent.jsontext import load_json
from agent.pipeline import ScoringPipeline
from agent.records import parse_records
from agent.registry.updater import build_updater
from agent.types import IntakePath, RecordFormat, ScoreRequest
from bench.inputs import AS_OF, AS_OF_TEXT, demo_bundle, oru_30_obx, vitals_bundle
from bench.peers.mapping import features
from bench.peers.model import FEATURES, PeerModel
from bench.peers.sklearn_service import onnxruntime_predictor, score_bundle, sklearn_predictor


@dataclass(frozen=True)
class MicroResult:
    """One measure: the agent's time and each peer's (seconds per call; None: no such path)."""

    measure: str
    agent: float
    sklearn: float | None
    onnxruntime: float | None
    note: str = ""


def cpu_per_call(
    fn: Callable[[], object],
    calls: int,
    repeats: int = 5,
    clock: Callable[[], float] = time.thread_time,
) -> float:
    """Median over ``repeats`` of the mean CPU seconds per call of ``calls`` calls, by
    ``clock`` (this thread's CPU time unless told otherwise)."""
    fn()
    samples = []
    for _ in range(repeats):
        started = clock()
        for _ in range(calls):
            fn()
        samples.append((clock() - started) / calls)
    return statistics.median(samples)


def _process_cpu_per_call(pipeline: ScoringPipeline, fn: Callable[[], object], calls: int) -> float:
    """``cpu_per_call`` by the process's CPU time, each repeat ending once the writer threads
    have written what it queued: the cost of a request wherever its work runs."""

    def settled() -> float:
        if pipeline.audit is not None:
            pipeline.audit.flush()
        return time.process_time()

    return cpu_per_call(fn, calls, clock=settled)


def agent_pipeline(config_path: Path) -> ScoringPipeline:
    """The real pipeline of the demo config, its bundle pulled from the demo registry."""
    config = load_config(config_path)
    pipeline = ScoringPipeline.from_config(config)
    build_updater(config, pipeline).pull_once()
    if not pipeline.ready:
        raise RuntimeError("the demo model did not load")
    return pipeline


def run_micro(
    pipeline: ScoringPipeline, full: ScoringPipeline, peer: PeerModel, calls: int
) -> list[MicroResult]:
    """Every micro-benchmark with ``calls`` calls per repeat (fewer for the slow ones);
    ``pipeline`` is the demo config as shipped, ``full`` the same configured with full FHIR
    validation (the R4B models)."""
    from fhir.resources.R4B.bundle import Bundle

    body, oru, vitals = demo_bundle(), oru_30_obx(), vitals_bundle()
    limits = pipeline.limits
    served = pipeline.served("deterioration")
    record = parse_records(body, RecordFormat.fhir_json, limits=limits)[0]
    document = json.loads(body)
    skl, ort = sklearn_predictor(peer), onnxruntime_predictor()
    row = features(document, AS_OF, peer.medians, FEATURES)
    request = ScoreRequest(
        model="deterioration",
        body=body,
        format=RecordFormat.fhir_json,
        intake=IntakePath.http,
        as_of=AS_OF,
        caller="bench",
        request_id="bench",
    )
    vitals_request = replace(request, body=vitals)

    def cpu(fn: Callable[[], object], scale: float = 1.0) -> float:
        return cpu_per_call(fn, max(int(calls * scale), 1))

    def validate_peer() -> object:
        return Bundle.model_validate(json.loads(body))

    peer_score = cpu(lambda: score_bundle(body, AS_OF_TEXT, peer.medians), 0.1)
    skl_predict, ort_predict = cpu(lambda: skl([row]), 0.1), cpu(lambda: ort([row]))
    whole = full.config.records
    pipeline.start()
    full.start()
    try:
        wholes = [
            MicroResult(
                "whole request in process (parse, map, predict)",
                cpu(lambda: pipeline.score(request), 0.1),
                peer_score + skl_predict,
                peer_score + ort_predict,
                "agent: ScoringPipeline.score with monitor and audit log (request thread)",
            ),
            MicroResult(
                "whole request, process CPU",
                _process_cpu_per_call(pipeline, lambda: pipeline.score(request), calls // 10),
                None,
                None,
                "the same, writer threads included (the audit entry's HMAC and write)",
            ),
            MicroResult(
                "whole request in process, full validation",
                cpu(lambda: full.score(request), 0.1),
                peer_score + skl_predict,
                peer_score + ort_predict,
                "the same with records.fhir_validation: full",
            ),
            MicroResult(
                "json.loads of the vitals bundle",
                cpu(lambda: json.loads(vitals)),
                None,
                None,
                "Patient + 5 Observations (bench.inputs.vitals_bundle)",
            ),
            MicroResult(
                "whole request in process, vitals bundle",
                cpu(lambda: pipeline.score(vitals_request), 0.1),
                None,
                None,
                "ScoringPipeline.score on it (request thread)",
            ),
        ]
    finally:
        pipeline.stop()
        full.stop()
    return [
        MicroResult(
            "json.loads of the 30-observation bundle",
            cpu(lambda: json.loads(body)),
            None,
            None,
            "the floor every FHIR path pays",
        ),
        MicroResult(
            "strict JSON read (agent.jsontext.load_json)",
            cpu(lambda: load_json(body, "body")),
            None,
            None,
            "orjson, NaN and infinities refused: what every FHIR path pays",
        ),
        MicroResult(
            "FHIR parse + validation as shipped",
            cpu(lambda: parse_records(body, RecordFormat.fhir_json, limits=limits)),
            None,
            None,
            "records.fhir_validation: essential (the default): what mapping can read",
        ),
        MicroResult(
            "FHIR parse + full validation (R4B)",
            cpu(
                lambda: parse_records(body, RecordFormat.fhir_json, limits=limits, config=whole),
                0.1,
            ),
            cpu(validate_peer, 0.1),
            None,
            "agent: fhir_validation: full (the R4B models); "
            "peer: json.loads + Bundle.model_validate",
        ),
        MicroResult(
            "map 30 observations to 9 features",
            cpu(lambda: served.mapping.extract(record, AS_OF)),
            cpu(lambda: features(document, AS_OF, peer.medians, FEATURES)),
            None,
            "agent: SiteMapping.extract (units, windows, provenance); peer: dict walk",
        ),
        MicroResult(
            "HL7 v2 ORU^R01 (30 OBX) parse + map",
            cpu(
                lambda: served.mapping.extract(
                    parse_records(oru, RecordFormat.hl7v2, limits=limits)[0], AS_OF
                ),
                0.1,
            ),
            None,
            None,
            "the peers speak no HL7 v2",
        ),
        MicroResult(
            "predict one row",
            cpu(lambda: served.runtime.predict([row])),
            skl_predict,
            ort_predict,
            "agent: WasmModel.predict; peers: predict_proba / InferenceSession.run",
        ),
        *wholes,
    ]
