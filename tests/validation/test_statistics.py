"""The validation statistics against scikit-learn on real-sized data: the same figures a
data scientist would compute in a notebook, to 1e-6 or better."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from agent.validation.calibration import logit, recalibrate, reliability_curve
from agent.validation.metrics import (
    auroc_delong,
    average_precision,
    brier,
    midranks,
    proportion,
    roc_points,
    threshold_row,
)


def cohort(n: int, seed: int, miscalibration: float = 1.4) -> tuple[list[float], list[int]]:
    """Risks rounded to 3 decimals (so many ties, as a model's output has), and outcomes
    drawn from a distorted version of them (so calibration is not perfect)."""
    rng = np.random.default_rng(seed)
    risk = np.round(rng.beta(1.2, 8.0, n), 3)
    truth = 1 / (
        1 + np.exp(-(0.3 + miscalibration * np.log(np.clip(risk, 1e-3, None) / (1 - risk))))
    )
    labels = (rng.random(n) < truth).astype(int)
    return [float(r) for r in risk], [int(y) for y in labels]


@pytest.mark.parametrize("n,seed", [(5000, 1), (20000, 2), (300, 3)])
def test_discrimination_and_accuracy_agree_with_scikit_learn(n: int, seed: int) -> None:
    scores, labels = cohort(n, seed)
    assert len(set(scores)) < n  # ties present
    delong = auroc_delong(scores, labels)
    assert delong is not None
    assert delong.value == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    assert brier(scores, labels).value == pytest.approx(brier_score_loss(labels, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    points = np.array(roc_points(scores, labels))
    assert points.shape == (len(fpr), 2)
    assert np.abs(points - np.column_stack([fpr, tpr])).max() < 1e-12


def _delong_by_definition(scores: list[float], labels: list[int]) -> tuple[float, float]:
    """DeLong's AUROC variance from its definition, pair by pair (O(m n))."""
    x = np.array([s for s, y in zip(scores, labels, strict=True) if y == 1])[:, None]
    y = np.array([s for s, lab in zip(scores, labels, strict=True) if lab == 0])[None, :]
    psi = (x > y) + 0.5 * (x == y)
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    variance = v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01)
    return float(psi.mean()), float(variance)


def test_delong_interval_matches_the_pairwise_definition() -> None:
    scores, labels = cohort(1500, 4)
    auc, variance = _delong_by_definition(scores, labels)
    delong = auroc_delong(scores, labels)
    assert delong is not None and delong.low is not None and delong.high is not None
    assert delong.value == pytest.approx(auc, abs=1e-12)
    assert (delong.high - delong.low) / 2 == pytest.approx(1.959963984540054 * math.sqrt(variance))
    assert delong.low <= delong.value <= delong.high


def test_auroc_is_undefined_with_one_outcome_and_has_no_interval_with_one_case() -> None:
    assert auroc_delong([0.1, 0.2, 0.3], [0, 0, 0]) is None
    single = auroc_delong([0.1, 0.2, 0.9], [0, 0, 1])
    assert single is not None and single.value == 1.0 and single.low is None


def test_calibration_slope_agrees_with_an_unpenalized_logistic_regression() -> None:
    scores, labels = cohort(5000, 5)
    x = np.array([logit(s) for s in scores])[:, None]
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, labels)
    fit = recalibrate(scores, labels)
    assert fit.slope is not None and fit.intercept is not None
    assert fit.slope.value == pytest.approx(reference.coef_[0][0], abs=1e-6)
    assert fit.slope.value > 1.1  # the cohort's risks are too modest: the fit sees it
    # in the large: the fitted intercept makes mean predicted equal the observed rate
    recalibrated = 1 / (1 + np.exp(-(fit.intercept.value + x[:, 0])))
    assert recalibrated.sum() == pytest.approx(sum(labels), abs=1e-6)
    assert fit.slope.low is not None and fit.slope.low < fit.slope.value


def test_calibration_of_well_calibrated_scores_is_near_ideal() -> None:
    scores, labels = cohort(20000, 6, miscalibration=1.0)
    rng = np.random.default_rng(7)
    labels = [int(v) for v in (rng.random(len(scores)) < np.array(scores))]
    fit = recalibrate(scores, labels)
    assert fit.slope is not None and fit.intercept is not None
    assert fit.slope.low is not None and fit.slope.high is not None
    assert fit.slope.low <= 1.0 <= fit.slope.high or abs(fit.slope.value - 1) < 0.1
    assert abs(fit.intercept.value) < 0.1


def test_calibration_without_a_maximum_is_none() -> None:
    fit = recalibrate([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])  # perfectly separated
    assert fit.slope is None
    assert recalibrate([0.1, 0.2], [0, 0]).intercept is None


def test_threshold_rows_agree_with_a_confusion_matrix() -> None:
    scores, labels = cohort(5000, 8)
    for threshold in (0.1, 0.3, 0.6):
        tn, fp, fn, tp = confusion_matrix(labels, [int(s >= threshold) for s in scores]).ravel()
        row = threshold_row("warning", threshold, scores, labels)
        assert (row.alerts, row.true_alerts) == (tp + fp, tp)
        assert row.sensitivity == pytest.approx(tp / (tp + fn))
        assert row.specificity == pytest.approx(tn / (tn + fp))
        assert row.npv == pytest.approx(tn / (tn + fn))
        assert row.alerts_per_100 == pytest.approx(100 * (tp + fp) / len(scores))
    nobody = threshold_row("critical", 1.5, scores, labels)
    assert nobody.alerts == 0 and nobody.ppv is None and nobody.sensitivity == 0.0


def test_reliability_curve_bins_by_deciles_and_never_below_the_minimum() -> None:
    scores, labels = cohort(1000, 9)
    curve = reliability_curve(scores, labels)
    assert len(curve) == 10 and sum(b.count for b in curve) == 1000
    order = np.argsort(scores, kind="stable")
    first = order[:100]
    assert curve[0].mean_predicted == pytest.approx(np.mean(np.array(scores)[first]))
    assert [b.mean_predicted for b in curve] == sorted(b.mean_predicted for b in curve)
    assert len(reliability_curve(scores[:35], labels[:35])) == 3
    assert reliability_curve(scores[:9], labels[:9]) == []


def test_midranks_and_wilson_interval() -> None:
    assert midranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    estimate = proportion(5, 40)
    wilson = binomtest(5, 40).proportion_ci(confidence_level=0.95, method="wilson")
    assert (estimate.low, estimate.high) == pytest.approx((wilson.low, wilson.high), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([i / 20 for i in range(21)]), st.integers(0, 1)),
        min_size=2,
        max_size=60,
    ).filter(lambda rows: len({y for _, y in rows}) == 2)
)
def test_any_small_sample_with_ties_agrees_with_scikit_learn(rows: list[tuple[float, int]]) -> None:
    scores, labels = [s for s, _ in rows], [y for _, y in rows]
    delong = auroc_delong(scores, labels)
    assert delong is not None
    assert delong.value == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    assert brier(scores, labels).value == pytest.approx(brier_score_loss(labels, scores), abs=1e-12)
    if delong.low is not None and delong.high is not None:
        assert 0.0 <= delong.low <= delong.value <= delong.high <= 1.0
