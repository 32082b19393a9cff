"""Discrimination and accuracy of a risk score against 0/1 outcomes: pure functions.

Definitions follow scikit-learn's so that the figures can be checked against it:
``auroc`` is ``roc_auc_score`` (ties count one half), ``average_precision`` is
``average_precision_score`` (precision at each distinct threshold weighted by the recall
gained there, no interpolation), ``brier`` is ``brier_score_loss``. The AUROC interval is
DeLong's (1988) in the fast midrank form of Sun and Xu (2014): no resampling, so it is
deterministic and costs one sort.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

LEVEL = 0.95  # the confidence level of every interval in a report


def z_value(level: float = LEVEL) -> float:
    """The two-sided standard normal quantile for ``level`` (1.96 for 95 %)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


@dataclass(frozen=True)
class Estimate:
    """A figure with its confidence interval (``low``/``high`` None when there is none)."""

    value: float
    low: float | None = None
    high: float | None = None


def midranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values`` with tied values given the mean of their ranks."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        for position in range(start, end + 1):
            ranks[order[position]] = rank
        start = end + 1
    return ranks


def _split(scores: Sequence[float], labels: Sequence[int]) -> tuple[list[float], list[float]]:
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y != 1]
    return positives, negatives


def auroc_delong(
    scores: Sequence[float], labels: Sequence[int], level: float = LEVEL
) -> Estimate | None:
    """AUROC with DeLong's confidence interval (clipped to [0, 1]); None unless both
    outcomes occur. With a single positive or negative the variance is undefined and the
    interval is left out."""
    positives, negatives = _split(scores, labels)
    m, n = len(positives), len(negatives)
    if m == 0 or n == 0:
        return None
    combined = midranks(positives + negatives)
    within_pos = midranks(positives)
    within_neg = midranks(negatives)
    # placement values: the share of the other class each case outranks
    v10 = [(combined[i] - within_pos[i]) / n for i in range(m)]
    v01 = [1.0 - (combined[m + j] - within_neg[j]) / m for j in range(n)]
    value = sum(v10) / m
    if m < 2 or n < 2:
        return Estimate(value)
    variance = _sample_variance(v10) / m + _sample_variance(v01) / n
    half = z_value(level) * math.sqrt(variance)
    return Estimate(value, max(0.0, value - half), min(1.0, value + half))


def _sample_variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the precision-recall curve as scikit-learn's ``average_precision_score``;
    None when no outcome is positive."""
    total_positive = sum(1 for y in labels if y == 1)
    if total_positive == 0:
        return None
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: -pair[0])
    true_pos = false_pos = 0
    recall_before = 0.0
    area = 0.0
    for index, (score, label) in enumerate(ranked):
        if label == 1:
            true_pos += 1
        else:
            false_pos += 1
        if index + 1 < len(ranked) and ranked[index + 1][0] == score:
            continue  # one step per distinct threshold
        recall = true_pos / total_positive
        area += (recall - recall_before) * true_pos / (true_pos + false_pos)
        recall_before = recall
    return area


def brier(scores: Sequence[float], labels: Sequence[int], level: float = LEVEL) -> Estimate:
    """Mean squared difference between risk and outcome, with a normal-approximation
    interval (a mean of independent squared errors); lower is better."""
    errors = [(s - y) ** 2 for s, y in zip(scores, labels, strict=True)]
    value = sum(errors) / len(errors)
    if len(errors) < 2:
        return Estimate(value)
    half = z_value(level) * math.sqrt(_sample_variance(errors) / len(errors))
    return Estimate(value, max(0.0, value - half), value + half)


def proportion(events: int, total: int, level: float = LEVEL) -> Estimate:
    """A proportion with Wilson's score interval (good at small counts and near 0 or 1)."""
    value = events / total
    z = z_value(level)
    centre = (value + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(value * (1 - value) / total + z * z / (4 * total * total))
    half /= 1 + z * z / total
    return Estimate(value, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class ThresholdRow:
    """How an alert threshold would have performed: a score at or above it alerts."""

    name: str
    threshold: float
    alerts: int
    true_alerts: int
    sensitivity: float | None  # None where the denominator is empty
    specificity: float | None
    ppv: float | None
    npv: float | None
    alerts_per_100: float


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def threshold_row(
    name: str, threshold: float, scores: Sequence[float], labels: Sequence[int]
) -> ThresholdRow:
    """Sensitivity, specificity, PPV, NPV and alerts per 100 scored at ``threshold``."""
    tp = fp = fn = tn = 0
    for score, label in zip(scores, labels, strict=True):
        alert = score >= threshold
        if label == 1:
            tp, fn = (tp + 1, fn) if alert else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if alert else (fp, tn + 1)
    return ThresholdRow(
        name=name,
        threshold=threshold,
        alerts=tp + fp,
        true_alerts=tp,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
        alerts_per_100=100 * (tp + fp) / len(scores) if scores else 0.0,
    )


def roc_points(scores: Sequence[float], labels: Sequence[int]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) at each distinct threshold, from (0, 0) to
    (1, 1): the ROC curve to draw."""
    positives, negatives = _split(scores, labels)
    if not positives or not negatives:
        return []
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: -pair[0])
    points = [(0.0, 0.0)]
    tp = fp = 0
    for index, (score, label) in enumerate(ranked):
        tp, fp = (tp + 1, fp) if label == 1 else (tp, fp + 1)
        if index + 1 < len(ranked) and ranked[index + 1][0] == score:
            continue
        points.append((fp / len(negatives), tp / len(positives)))
    return points
