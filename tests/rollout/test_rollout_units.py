"""The parts of a candidate rollout on their own: the running comparison, the canary
choice of patients, the shadow lane's bound, the promotion gates, the store's pointer."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.rollout.canary import canary_key, in_canary
from agent.rollout.comparison import Comparison
from agent.rollout.config import PromotionGates, placement
from agent.rollout.gates import LiveAuroc, evaluate
from agent.rollout.shadow import ShadowLane
from agent.store import BundleStore

THRESHOLDS = {"warning": 0.3, "critical": 0.6}


def comparison(window: int = 1000, min_records: int = 100) -> Comparison:
    return Comparison(THRESHOLDS, window=window, min_records=min_records, epsilon=1e-4)


def test_identical_versions_agree_everywhere() -> None:
    c = comparison()
    rng = random.Random(1)
    for _ in range(500):
        score = rng.random()
        c.add(score, score, 0.001, 0.002)
    r = c.read()
    assert r.records == 500
    assert r.correlation == pytest.approx(1.0)
    assert r.mean_abs_difference == 0.0 and r.p99_abs_difference == 0.0
    assert r.agreement == {"warning": 1.0, "critical": 1.0} and r.disagreement == 0.0
    assert r.psi is not None and r.psi < 1e-9
    assert r.latency_seconds["active"]["p99"] == 0.001
    assert r.latency_seconds["candidate"]["p50"] == 0.002
    assert sum(r.histograms["active"]) == sum(r.histograms["candidate"]) == 500


def test_a_shifted_candidate_shows_in_every_statistic() -> None:
    c = comparison()
    rng = random.Random(2)
    for _ in range(1000):
        score = rng.random() * 0.5
        c.add(score, score + 0.2, 0.001, 0.001)  # everyone 0.2 riskier
    r = c.read()
    assert r.correlation == pytest.approx(1.0)
    assert r.mean_abs_difference == pytest.approx(0.2)
    assert r.p99_abs_difference == pytest.approx(0.2)
    # scores in [0.1, 0.3) cross the warning threshold: about 40% of them
    assert r.agreement["warning"] == pytest.approx(0.6, abs=0.05)
    assert r.disagreement == pytest.approx(0.4, abs=0.05)
    assert r.psi is not None and r.psi > 0.25  # "act" territory


def test_small_samples_report_nothing_they_cannot_support() -> None:
    c = comparison(min_records=100)
    assert c.read().correlation is None and c.read().disagreement is None
    for score in (0.1, 0.2, 0.4):
        c.add(score, score, 0.0, 0.0)
    r = c.read()
    assert r.records == 3 and r.psi is None  # under min_records
    c.add(float("nan"), 0.5, 0.0, 0.0)  # a non-finite score is not a pair
    c.skip("queue_full", 4)
    r = c.read()
    assert r.records == 3 and r.skipped == {"queue_full": 4, "refused": 1, "error": 0}


def test_the_window_bounds_memory_but_counts_cover_everything() -> None:
    c = comparison(window=50, min_records=10)
    for i in range(200):
        c.add(0.0, 1.0 if i < 150 else 0.0, 0.0, 0.0)
    r = c.read()
    assert r.records == 200
    assert r.mean_abs_difference == pytest.approx(0.75)  # over every pair
    assert r.p99_abs_difference == 0.0  # the last 50 pairs agree
    assert sum(r.histograms["active"]) == 50


def test_canary_share_is_within_two_points_over_2000_patients_and_stable(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "site.key"
    secret.write_bytes(b"a site secret of enough length\n")
    key = canary_key(secret)
    patients = [f"Patient/{i}" for i in range(2000)]
    # two points is 4 standard deviations of a binomial share at 5% and 2.9 at 10%; at
    # 50% the bound is 3.5 standard deviations (4 points)
    for share, bound in ((0.05, 0.02), (0.1, 0.02), (0.5, 0.04)):
        chosen = [p for p in patients if in_canary(key, p, share)]
        assert abs(len(chosen) / len(patients) - share) <= bound, share
        assert chosen == [p for p in patients if in_canary(key, p, share)]  # stable
    # a larger share keeps every patient the smaller one had (monotone in the share)
    small = {p for p in patients if in_canary(key, p, 0.05)}
    assert small <= {p for p in patients if in_canary(key, p, 0.1)}
    # another site's secret picks other patients; no reference, no canary
    other = tmp_path / "other.key"
    other.write_bytes(b"another site's secret, also long")
    assert small != {p for p in patients if in_canary(canary_key(other), p, 0.05)}
    assert not in_canary(key, "", 0.99)


def test_a_short_site_secret_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"too short")
    with pytest.raises(Exception, match="at least 16 bytes"):
        canary_key(short)


def test_the_shadow_lane_drops_and_counts_when_full_and_survives_a_failing_task() -> None:
    lane = ShadowLane(capacity=2)
    dropped: list[int] = []
    lane.submit(lambda: None, lambda: dropped.append(0))  # not started: dropped
    assert dropped == [0]
    lane.start()
    release = threading.Event()
    started = threading.Event()
    done: list[int] = []

    def blocker() -> None:
        started.set()
        release.wait(10)

    def failing() -> None:
        raise RuntimeError("a bug in shadow work")

    lane.submit(blocker, lambda: dropped.append(1))
    assert started.wait(10)
    lane.submit(failing, lambda: dropped.append(2))
    lane.submit(lambda: done.append(3), lambda: dropped.append(3))
    lane.submit(lambda: done.append(4), lambda: dropped.append(4))  # queue full
    assert dropped == [0, 4]
    release.set()
    deadline = time.monotonic() + 10
    while done != [3] and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = threading.Event()
    lane.submit(finished.set, lambda: dropped.append(5))
    assert finished.wait(10)
    assert done == [3]  # the failing task did not stop the lane
    lane.stop()
    lane.submit(lambda: None, lambda: dropped.append(6))
    assert dropped == [0, 4, 6]


def test_every_gate_is_named_with_what_it_saw() -> None:
    gates = PromotionGates(min_records=100, max_disagreement=0.05, min_days=2)
    c = comparison()
    for i in range(150):
        c.add(0.2, 0.2 if i % 10 else 0.4, 0.0, 0.0)  # 10% cross the warning threshold
    now = datetime(2026, 12, 4, tzinfo=UTC)
    results = {g.name: g for g in evaluate(gates, c.read(), now - timedelta(days=1), now)}
    assert results["min_records"].passed
    assert not results["max_disagreement"].passed
    assert "0.1000 disagree" in results["max_disagreement"].detail
    assert not results["min_days"].passed and "1.00 days" in results["min_days"].detail
    later = now + timedelta(days=1)
    assert evaluate(gates, c.read(), now - timedelta(days=1), later)[2].passed
    empty = evaluate(gates, comparison().read(), now, now)
    assert [g.passed for g in empty] == [False, False, False]


def test_the_live_auroc_gate_is_checked_only_when_configured() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    reading = comparison().read()
    assert [g.name for g in evaluate(PromotionGates(), reading, now, now)] == [
        "min_records",
        "max_disagreement",
        "min_days",
    ]
    gates = PromotionGates(max_auroc_drop=0.02)
    (gate,) = [
        g
        for g in evaluate(gates, reading, now, now, LiveAuroc(0.80, 0.79))
        if g.name == "max_auroc_drop"
    ]
    assert gate.passed and "a drop of 0.0100" in gate.detail
    (gate,) = [
        g
        for g in evaluate(gates, reading, now, now, LiveAuroc(0.80, 0.75))
        if g.name == "max_auroc_drop"
    ]
    assert not gate.passed
    (gate,) = [
        g
        for g in evaluate(gates, reading, now, now, LiveAuroc(0.80, None))
        if g.name == "max_auroc_drop"
    ]
    assert not gate.passed and "not enough labelled outcomes" in gate.detail


def test_only_a_later_version_under_shadow_or_canary_becomes_a_candidate() -> None:
    assert placement("direct", True) == "active"
    assert placement("shadow", False) == "active"  # the first version always serves
    assert placement("shadow", True) == placement("canary", True) == "candidate"


def test_the_store_keeps_the_candidate_pointer_apart_from_the_active_one(
    tmp_path: Path,
) -> None:
    store = BundleStore(tmp_path / "store", keep_versions=1)
    assert store.candidate("sepsis") is None
    with pytest.raises(StoreError):
        store.set_candidate("sepsis", "1.0.1", datetime.now(UTC))  # not installed
    (store.version_dir("sepsis", "1.0.1")).mkdir(parents=True)
    since = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    store.set_candidate("sepsis", "1.0.1", since)
    assert store.candidate("sepsis") == ("1.0.1", since)
    assert store.active_version("sepsis") is None
    store.clear_candidate("sepsis")
    assert store.candidate("sepsis") is None
    (tmp_path / "store" / "candidate" / "sepsis").write_text("garbage\n")
    with pytest.raises(StoreError):
        store.candidate("sepsis")
