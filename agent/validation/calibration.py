"""Calibration of a risk score: does a predicted 20 % mean 20 % of such patients had the
outcome? Pure functions.

Logistic recalibration (Cox 1958; Van Calster et al. 2016, "A calibration hierarchy"):
regress the outcome on the logit of the predicted risk. The *slope* comes from
``logit P(y) = a + b * logit(p)``: 1 is ideal, below 1 the risks are too extreme (typical
of overfitting or a different case mix), above 1 too modest. The *intercept* is
calibration-in-the-large, fitted with the slope fixed at 1 (``logit P(y) = a +
logit(p)``): 0 is ideal, below 0 the model over-estimates risk on average, above 0 it
under-estimates it. Both are maximum-likelihood fits by Newton-Raphson, with Wald
intervals from the observed information.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agent.validation.metrics import LEVEL, Estimate, z_value

CLIP = 1e-10  # risks are held inside [CLIP, 1 - CLIP] before taking their logit
_ITERATIONS_MAX = 100
_STEP_TOLERANCE = 1e-12
_PARAMETER_MAX = 1e4  # beyond this the likelihood has no maximum (separation): no fit


def logit(risk: float) -> float:
    """log(p / (1 - p)) of ``risk`` held inside [CLIP, 1 - CLIP]."""
    p = min(max(risk, CLIP), 1 - CLIP)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    e = math.exp(x)
    return e / (1 + e)


@dataclass(frozen=True)
class Calibration:
    """Logistic recalibration of one set of scores; either figure is None where the fit
    has no maximum (all outcomes alike, or scores that separate them perfectly)."""

    intercept: Estimate | None  # calibration-in-the-large, slope fixed at 1
    slope: Estimate | None


def recalibrate(
    scores: Sequence[float], labels: Sequence[int], level: float = LEVEL
) -> Calibration:
    """The calibration intercept and slope of ``scores`` against ``labels``."""
    x = [logit(s) for s in scores]
    z = z_value(level)
    intercept = slope = None
    in_the_large = _fit_intercept(x, labels)
    if in_the_large is not None:
        a, se = in_the_large
        intercept = Estimate(a, a - z * se, a + z * se)
    joint = _fit_line(x, labels)
    if joint is not None:
        b, se = joint
        slope = Estimate(b, b - z * se, b + z * se)
    return Calibration(intercept, slope)


def _fit_intercept(offsets: Sequence[float], labels: Sequence[int]) -> tuple[float, float] | None:
    """``a`` maximizing the likelihood of ``logit P(y) = a + offset``, and its standard
    error; None without a maximum."""
    a = 0.0
    for _ in range(_ITERATIONS_MAX):
        risks = [_sigmoid(a + o) for o in offsets]
        gradient = sum(y - p for y, p in zip(labels, risks, strict=True))
        information = sum(p * (1 - p) for p in risks)
        if information <= 0:
            return None
        step = gradient / information
        a += step
        if abs(a) > _PARAMETER_MAX:
            return None
        if abs(step) < _STEP_TOLERANCE:
            information = sum(p * (1 - p) for p in (_sigmoid(a + o) for o in offsets))
            return a, 1 / math.sqrt(information)
    return None


def _fit_line(x: Sequence[float], labels: Sequence[int]) -> tuple[float, float] | None:
    """The slope ``b`` of the maximum-likelihood ``logit P(y) = a + b x`` and its standard
    error; None without a maximum."""
    a = b = 0.0
    for _ in range(_ITERATIONS_MAX):
        g0 = g1 = h00 = h01 = h11 = 0.0
        for xi, yi in zip(x, labels, strict=True):
            p = _sigmoid(a + b * xi)
            w = p * (1 - p)
            g0 += yi - p
            g1 += (yi - p) * xi
            h00 += w
            h01 += w * xi
            h11 += w * xi * xi
        determinant = h00 * h11 - h01 * h01
        if determinant <= 0 or not math.isfinite(determinant):
            return None
        step_a = (h11 * g0 - h01 * g1) / determinant
        step_b = (h00 * g1 - h01 * g0) / determinant
        a, b = a + step_a, b + step_b
        if max(abs(a), abs(b)) > _PARAMETER_MAX:
            return None
        if max(abs(step_a), abs(step_b)) < _STEP_TOLERANCE:
            # the information at the previous iterate; the step was negligible
            return b, math.sqrt(h00 / determinant)
    return None


@dataclass(frozen=True)
class ReliabilityBin:
    """One point of the reliability curve: scores grouped by size of predicted risk."""

    count: int
    mean_predicted: float
    observed_rate: float


def reliability_curve(
    scores: Sequence[float], labels: Sequence[int], bins: int = 10, bin_min: int = 10
) -> list[ReliabilityBin]:
    """Mean predicted risk against the observed rate in up to ``bins`` groups of equal
    size by predicted risk (deciles), fewer when that would leave a group under
    ``bin_min`` scores (so no point stands for a handful of patients)."""
    count = min(bins, len(scores) // bin_min)
    if count == 0:
        return []
    ranked = sorted(zip(scores, labels, strict=True))
    curve = []
    for index in range(count):
        chunk = ranked[index * len(ranked) // count : (index + 1) * len(ranked) // count]
        curve.append(
            ReliabilityBin(
                count=len(chunk),
                mean_predicted=sum(s for s, _ in chunk) / len(chunk),
                observed_rate=sum(y for _, y in chunk) / len(chunk),
            )
        )
    return curve
