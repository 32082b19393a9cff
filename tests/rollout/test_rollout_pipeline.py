"""Candidate versions in the real pipeline (in process): the demo model active, a second
signed version staged as candidate, real records scored through wasmtime. Shadow: every
answer comes from the active version while the comparison moves, a candidate that traps is
counted and skipped; canary: the keyed share of patients is answered by the candidate, the
same patients every time; gates block a promotion by name, a forced one is audited."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.bundle.archive import read_bundle_dir
from agent.bundle.trust import TrustConfig, TrustStore
from agent.bundle.verify import VerifiedBundle, verify_bundle
from agent.config import AgentConfig
from agent.errors import RolloutError
from agent.limits import Limits
from agent.pipeline import ScoringPipeline
from agent.rollout.canary import canary_key, in_canary
from agent.rollout.history import InForce, LifecycleEvent, in_force, read_history
from agent.store import BundleStore
from agent.types import IntakePath, OutcomeReport, RecordFormat, ScoreRequest, ScoreResult
from tests.integration.reliability_support import AS_OF, DEMO_BUNDLE, DEMO_KEY, wat_bundle
from tests.rollout.rollout_support import CANDIDATE_WAT, patients_ndjson

REPO = Path(__file__).resolve().parents[2]
MODEL = "deterioration"
AUDIT_KEY = REPO / "fixtures/keys/demo-audit-hmac.key"


def make_pipeline(
    tmp_path: Path, sections: dict[str, Any] | None = None, **model: Any
) -> tuple[ScoringPipeline, VerifiedBundle]:
    """The demo bundle active in a fresh store, the pipeline started, and a candidate bundle
    (``CANDIDATE_WAT`` as 1.0.1, signed with the demo key) verified but not yet placed."""
    config = AgentConfig.model_validate(
        {
            "store": {"root": str(tmp_path / "store")},
            "trust": {
                "keys": [
                    {
                        "id": "c54ce43e9dcdc76f",
                        "public_key_file": str(REPO / "fixtures/keys/demo-publisher.pub"),
                    }
                ]
            },
            "models": [
                {
                    "name": MODEL,
                    "mapping": str(REPO / "config/mappings/demo-site.yaml"),
                    "risk_output": "probability_1",
                    **model,
                }
            ],
            "audit": {"path": str(tmp_path / "audit.jsonl"), "hmac_key_file": str(AUDIT_KEY)},
            "http": {"enabled": False},
            **(sections or {}),
        }
    )
    limits, trust = Limits(), TrustStore(config.trust)
    store = BundleStore(config.store.root)
    active = verify_bundle(read_bundle_dir(DEMO_BUNDLE, limits), trust, limits=limits)
    store.install(active)
    store.activate(MODEL, active.manifest.version)
    folder = wat_bundle(tmp_path / "candidate", "1.0.1", DEMO_KEY, CANDIDATE_WAT)
    candidate = verify_bundle(read_bundle_dir(folder, limits), trust, limits=limits)
    store.install(candidate)
    pipeline = ScoringPipeline.from_config(config, CollectorRegistry())
    pipeline.start()
    return pipeline, candidate


@pytest.fixture
def stopped() -> Iterator[list[ScoringPipeline]]:
    pipelines: list[ScoringPipeline] = []
    yield pipelines
    for pipeline in pipelines:
        pipeline.stop()


def score(pipeline: ScoringPipeline, body: bytes) -> ScoreResult:
    return pipeline.score(
        ScoreRequest(
            model=MODEL,
            body=body,
            format=RecordFormat.fhir_ndjson,
            intake=IntakePath.cli,
            as_of=datetime.fromisoformat(AS_OF),
        )
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def stage(pipeline: ScoringPipeline, candidate: VerifiedBundle) -> None:
    """What the updater does with a pulled version under shadow or canary."""
    assert pipeline.place(candidate) == "candidate"
    pipeline.store.set_candidate(MODEL, "1.0.1", datetime.now().astimezone())


def test_shadow_answers_from_the_active_version_and_compares_off_the_path(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    pipeline, candidate = make_pipeline(tmp_path, rollout="shadow")
    stopped.append(pipeline)
    stage(pipeline, candidate)
    assert pipeline.model(MODEL).version == "1.0.0"  # staging changes nothing that serves
    answered = 0
    for start in range(0, 120, 40):
        result = score(pipeline, patients_ndjson(range(start, start + 40), start, 0.1))
        versions = {p.version for p in result.predictions}
        assert versions == {"1.0.0"} and len(result.predictions) == 40
        answered += 40
    comparison = pipeline.candidate(MODEL)
    assert comparison is not None
    wait_until(
        lambda: (r := comparison.comparison.read()).records + r.skipped["refused"] == answered,
        "the shadow lane to compare every answered record",
    )
    reading = comparison.comparison.read()
    assert reading.skipped["refused"] > 0  # the candidate trapped on those: skipped, counted
    assert reading.records > 90 and reading.skipped["queue_full"] == 0
    assert reading.mean_abs_difference is not None and reading.mean_abs_difference > 0
    assert reading.correlation is not None and reading.psi is not None
    assert set(reading.agreement) == {"warning", "critical"}
    status = pipeline.status()["candidates"][MODEL]
    assert status["version"] == "1.0.1" and status["mode"] == "shadow"
    assert status["comparison"]["records"] == reading.records
    exposition = pipeline.monitor.registry.get_sample_value(
        "edge_agent_candidate_compared_records_total", {"model": MODEL}
    )
    assert exposition == reading.records


def test_canary_answers_the_keyed_share_of_patients_the_same_way_every_time(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    pipeline, candidate = make_pipeline(tmp_path, rollout="canary", canary_share=0.3)
    stopped.append(pipeline)
    stage(pipeline, candidate)
    body = patients_ndjson(range(60), seed=5)
    first, again = score(pipeline, body), score(pipeline, body)
    key = canary_key(AUDIT_KEY)
    by_patient = {o.reference: o.prediction.version for o in first.outcomes if o.prediction}
    assert by_patient == {o.reference: o.prediction.version for o in again.outcomes if o.prediction}
    expected = {r: "1.0.1" if in_canary(key, r, 0.3) else "1.0.0" for r in by_patient}
    assert by_patient == expected and set(by_patient.values()) == {"1.0.0", "1.0.1"}
    for outcome in first.outcomes:  # the answer names the version that made it
        assert outcome.prediction is not None
        p = outcome.prediction
        assert p.bundle_digest == (
            candidate.digest if p.version == "1.0.1" else first.bundle_digest
        )
    wait_until(
        lambda: pipeline.status()["candidates"][MODEL]["comparison"]["records"] == 120,
        "both versions compared on every patient, whichever answered",
    )
    pipeline.stop()  # as in a one-shot command (score, validate): the active version answers
    assert {p.version for p in score(pipeline, body).predictions} == {"1.0.0"}
    assert pipeline.status()["candidates"][MODEL]["comparison"]["records"] == 120


def test_a_canary_patient_the_candidate_traps_on_is_answered_by_the_active_version(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    """A version on trial must not fail a patient the serving version can score: the
    candidate's trap is counted, the comparison skips the record, the answer is 1.0.0's."""
    pipeline, candidate = make_pipeline(tmp_path, rollout="canary", canary_share=0.9)
    stopped.append(pipeline)
    stage(pipeline, candidate)
    result = score(pipeline, patients_ndjson(range(40), seed=7, trap_share=0.3))
    assert all(o.prediction is not None for o in result.outcomes)  # every patient answered
    key = canary_key(AUDIT_KEY)
    in_trial = [o for o in result.outcomes if in_canary(key, o.reference, 0.9)]
    versions = [o.prediction.version for o in in_trial if o.prediction]
    fell_back = versions.count("1.0.0")
    assert 0 < fell_back < len(in_trial) and versions.count("1.0.1") == len(in_trial) - fell_back
    traps = pipeline.monitor.registry.get_sample_value(
        "edge_agent_errors_total", {"model": MODEL, "intake": "cli", "reason": "model_trap"}
    )
    assert traps == fell_back  # each counted once, against the model
    comparison = pipeline.candidate(MODEL)
    assert comparison is not None
    wait_until(
        lambda: (r := comparison.comparison.read()).records + r.skipped["refused"] == 40,
        "the shadow lane to see every patient",
    )
    # skipped: those, and any patient outside the trial the candidate traps on in shadow
    assert comparison.comparison.read().skipped["refused"] >= fell_back


def test_a_failing_gate_blocks_promotion_by_name_and_a_forced_one_is_audited(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    pipeline, candidate = make_pipeline(
        tmp_path, rollout="shadow", gates={"min_records": 10_000, "min_days": 0}
    )
    stopped.append(pipeline)
    stage(pipeline, candidate)
    score(pipeline, patients_ndjson(range(20), seed=9))
    with pytest.raises(RolloutError, match="min_records"):
        pipeline.promote(MODEL)
    assert pipeline.model(MODEL).version == "1.0.0"
    promotion = pipeline.promote(MODEL, force_reason="governance committee decision 12/4")
    assert promotion.version == "1.0.1"
    assert pipeline.model(MODEL).version == "1.0.1"
    assert pipeline.store.active_version(MODEL) == "1.0.1"
    assert pipeline.candidate(MODEL) is None and pipeline.store.candidate(MODEL) is None
    with pytest.raises(RolloutError, match="no candidate"):
        pipeline.abandon(MODEL)
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    (event,) = [e for e in entries if e.get("event") == "promotion"]
    assert event["version"] == "1.0.1" and event["previous_version"] == "1.0.0"
    assert event["forced"] is True and event["reason"] == "governance committee decision 12/4"
    assert {g["name"]: g["passed"] for g in event["gates"]}["min_records"] is False
    assert "records" in event["comparison"]


def test_abandoning_keeps_the_active_version_and_survives_a_restart(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    pipeline, candidate = make_pipeline(tmp_path, rollout="shadow")
    stopped.append(pipeline)
    stage(pipeline, candidate)
    restarted = ScoringPipeline.from_config(pipeline.config, CollectorRegistry())
    staged = restarted.candidate(MODEL)
    assert staged is not None and staged.served.version == "1.0.1"  # kept across restarts
    pipeline.abandon(MODEL)
    assert pipeline.model(MODEL).version == "1.0.0"
    assert pipeline.store.candidate(MODEL) is None
    assert "1.0.1" in pipeline.store.versions(MODEL)  # installed: not pulled again
    entries = (tmp_path / "audit.jsonl").read_text()
    assert '"event":"abandonment"' in entries


def test_a_reload_rebinds_the_candidate_with_its_comparison_and_a_revoked_signer_drops_it(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    pipeline, candidate = make_pipeline(tmp_path, rollout="shadow")
    stopped.append(pipeline)
    stage(pipeline, candidate)
    staged = pipeline.candidate(MODEL)
    assert staged is not None
    pipeline.reconfigure(pipeline.config)  # SIGHUP with the same files
    rebound = pipeline.candidate(MODEL)
    assert rebound is not None and rebound is not staged
    assert rebound.served.mapping is not staged.served.mapping  # the mapping file read again
    assert (rebound.served.version, rebound.since) == ("1.0.1", staged.since)
    assert rebound.comparison is staged.comparison  # what it was compared on so far stays
    key = {
        "id": "c54ce43e9dcdc76f",
        "public_key_file": str(REPO / "fixtures/keys/demo-publisher.pub"),
    }
    revoked = pipeline.config.model_copy(
        update={"trust": TrustConfig.model_validate({"keys": [{**key, "revoked": True}]})}
    )
    pipeline.reconfigure(revoked, TrustStore(revoked.trust))
    assert pipeline.candidate(MODEL) is None
    with pytest.raises(RolloutError, match="no candidate"):
        pipeline.review(MODEL)


def test_history_names_the_versions_in_force_at_any_past_moment(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    pipeline, candidate = make_pipeline(tmp_path, rollout="shadow", gates={"min_days": 0})
    stopped.append(pipeline)
    audit = tmp_path / "audit.jsonl"
    # an earlier audit file, rotated away, records how 1.0.0 came to serve
    rotated = {
        "time": "2026-11-01T08:00:00.000+00:00",
        "event": "activation",
        "model": MODEL,
        "version": "1.0.0",
        "previous_version": None,
    }
    (tmp_path / "audit.jsonl.1").write_text(json.dumps(rotated) + "\nnot json\n")
    stage(pipeline, candidate)
    pipeline.promote(MODEL, force_reason="test")
    events = read_history(audit, MODEL)
    assert [(e.event, e.version) for e in events] == [
        ("activation", "1.0.0"),
        ("staging", "1.0.1"),
        ("promotion", "1.0.1"),
    ]
    assert "forced: test" in events[-1].line()
    assert read_history(audit, "another-model") == []


def test_in_force_replays_the_events_up_to_a_moment() -> None:
    def at(text: str) -> datetime:
        return datetime.fromisoformat(f"2026-12-0{text}+00:00")

    events = [
        LifecycleEvent(at("1T08:00"), "activation", "1.0.0", ""),
        LifecycleEvent(at("2T08:00"), "staging", "1.1.0", "shadow"),
        LifecycleEvent(at("3T08:00"), "abandonment", "1.1.0", ""),
        LifecycleEvent(at("4T08:00"), "staging", "1.2.0", "canary"),
        LifecycleEvent(at("5T08:00"), "promotion", "1.2.0", ""),
        LifecycleEvent(at("6T08:00"), "rollback", "1.0.0", "was 1.2.0"),
    ]
    assert in_force(events, at("1T07:59")) == InForce(None, None)  # before the audit log
    assert in_force(events, at("1T08:00")) == InForce("1.0.0", None)
    assert in_force(events, at("2T12:00")) == InForce("1.0.0", "1.1.0")
    assert in_force(events, at("3T12:00")) == InForce("1.0.0", None)
    assert in_force(events, at("4T12:00")) == InForce("1.0.0", "1.2.0")
    assert in_force(events, at("5T12:00")) == InForce("1.2.0", None)
    assert in_force(events, at("7T00:00")) == InForce("1.0.0", None)


def test_outcomes_give_both_versions_a_live_auroc_and_a_worse_candidate_is_blocked(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    pipeline, candidate = make_pipeline(
        tmp_path,
        {"performance": {"enabled": True, "min_labelled": 20}},
        rollout="shadow",
        gates={"min_records": 0, "max_disagreement": 1.0, "min_days": 0, "max_auroc_drop": 0.05},
    )
    stopped.append(pipeline)
    stage(pipeline, candidate)
    result = score(pipeline, patients_ndjson(range(60), seed=11))
    with pytest.raises(RolloutError, match=r"max_auroc_drop \(not enough labelled outcomes"):
        pipeline.promote(MODEL)
    staged = pipeline.candidate(MODEL)
    assert staged is not None
    wait_until(lambda: staged.comparison.read().records == 60, "every patient compared")
    # the event happened to the patients the candidate ranks lowest (its score is the
    # heart rate / 200): the candidate's live AUROC is 0, the demo model's is not
    when = datetime.fromisoformat(AS_OF) + timedelta(hours=1)
    reports = [
        OutcomeReport(o.reference, int(o.prediction.vector.values[0] < 100), when)
        for o in result.outcomes
        if o.prediction is not None
    ]
    assert pipeline.record_outcomes(MODEL, reports).joined == 60
    registry = pipeline.monitor.registry
    active_auroc = registry.get_sample_value(
        "edge_agent_live_auroc", {"model": MODEL, "version": "1.0.0"}
    )
    candidate_auroc = registry.get_sample_value(
        "edge_agent_live_auroc", {"model": MODEL, "version": "1.0.1"}
    )
    assert candidate_auroc == 0.0 and active_auroc is not None and active_auroc > 0.05
    with pytest.raises(RolloutError, match=r"max_auroc_drop \(live AUROC active"):
        pipeline.promote(MODEL)
    assert pipeline.model(MODEL).version == "1.0.0"


def test_a_restart_resumes_the_candidates_comparison_where_it_stopped(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    """A week of shadow evidence must not vanish with a reboot: the comparison is kept in
    the store every ``limits.comparison_checkpoint`` seconds and at stop, and resumed when
    the same candidate is staged beside the same active version again."""
    pipeline, candidate = make_pipeline(tmp_path, rollout="shadow")
    stage(pipeline, candidate)
    staged = pipeline.candidate(MODEL)
    assert staged is not None
    score(pipeline, patients_ndjson(range(40), 7))
    wait_until(lambda: staged.comparison.read().records == 40, "the shadow comparison")
    before = staged.comparison.read()
    pipeline.stop()
    kept = json.loads((tmp_path / "store/state/comparisons" / MODEL).read_bytes())
    assert (kept["candidate"], kept["against"], kept["state"]["records"]) == ("1.0.1", "1.0.0", 40)
    assert "patient" not in json.dumps(kept).lower()  # numbers only

    restarted = ScoringPipeline.from_config(pipeline.config, CollectorRegistry())
    restarted.start()
    stopped.append(restarted)
    resumed = restarted.candidate(MODEL)
    assert resumed is not None and resumed.comparison.read() == before
    score(restarted, patients_ndjson(range(40, 60), 8))
    wait_until(lambda: resumed.comparison.read().records == 60, "the resumed comparison")
    restarted.abandon(MODEL)
    assert not (tmp_path / "store/state/comparisons" / MODEL).exists()


def test_a_kept_comparison_of_another_active_version_or_a_broken_one_starts_afresh(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    pipeline, candidate = make_pipeline(tmp_path, rollout="shadow")
    stage(pipeline, candidate)
    score(pipeline, patients_ndjson(range(20), 3))
    staged = pipeline.candidate(MODEL)
    assert staged is not None
    wait_until(lambda: staged.comparison.read().records == 20, "the shadow comparison")
    pipeline.stop()
    path = tmp_path / "store/state/comparisons" / MODEL
    kept = json.loads(path.read_bytes())
    for changed in (
        {**kept, "against": "0.9.0"},  # compared with a version no longer active
        {**kept, "state": {**kept["state"], "records": -1}},
        {**kept, "state": {**kept["state"], "agree": {"warning": 3}}},  # other thresholds
    ):
        path.write_text(json.dumps(changed))
        restarted = ScoringPipeline.from_config(pipeline.config, CollectorRegistry())
        fresh = restarted.candidate(MODEL)
        assert fresh is not None and fresh.comparison.read().records == 0
    path.write_bytes(b"\x00 not json")
    restarted = ScoringPipeline.from_config(pipeline.config, CollectorRegistry())
    assert restarted.candidate(MODEL) is not None  # the candidate itself still serves


def test_the_comparison_is_kept_while_the_lane_runs(
    tmp_path: Path, stopped: list[ScoringPipeline]
) -> None:
    """Not only at a clean stop: a crash loses at most ``limits.comparison_checkpoint``."""
    pipeline, candidate = make_pipeline(
        tmp_path, {"limits": {"comparison_checkpoint": 0}}, rollout="shadow"
    )
    stopped.append(pipeline)
    stage(pipeline, candidate)
    score(pipeline, patients_ndjson(range(30), 5))
    path = tmp_path / "store/state/comparisons" / MODEL
    wait_until(
        lambda: path.exists() and json.loads(path.read_bytes())["state"]["records"] == 30,
        "the comparison kept by the shadow lane",
    )
