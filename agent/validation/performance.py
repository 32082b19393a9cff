"""One set of labelled scores summarized: the figures of a report's overall section and of
each subgroup, as plain JSON-ready values (aggregates only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agent.validation.calibration import recalibrate, reliability_curve
from agent.validation.metrics import (
    Estimate,
    auroc_delong,
    average_precision,
    brier,
    proportion,
    roc_points,
    threshold_row,
)

PATIENTS_MIN = 10  # fewer distinct patients than this: the figures are suppressed
HISTOGRAM_BINS = 10  # score distribution bins over [0, 1]
ROC_POINTS_MAX = 200  # points of the ROC curve kept for drawing


@dataclass(frozen=True)
class Labelled:
    """One scored moment and what happened. ``patient`` is a number local to one run,
    never an identifier; ``groups`` maps a dimension (sex, age, a CSV column) to a group."""

    score: float
    label: int
    patient: int
    groups: Mapping[str, str]


def estimate(value: Estimate | None) -> dict[str, float | None] | None:
    return None if value is None else asdict(value)


def summarize(
    sample: Sequence[Labelled], thresholds: Sequence[tuple[str, float]], curves: bool
) -> dict[str, Any]:
    """The figures of ``sample``; ``{"suppressed": True, ...}`` under ``PATIENTS_MIN``
    patients. ``curves`` adds what the plots draw (ROC, reliability, distributions)."""
    patients = len({item.patient for item in sample})
    if patients < PATIENTS_MIN:
        return {"suppressed": True, "reason": f"fewer than {PATIENTS_MIN} patients"}
    scores = [item.score for item in sample]
    labels = [item.label for item in sample]
    positives = sum(labels)
    fit = recalibrate(scores, labels)
    figures: dict[str, Any] = {
        "suppressed": False,
        "patients": patients,
        "scored": len(sample),
        "positives": positives,
        "prevalence": estimate(proportion(positives, len(sample))),
        "auroc": estimate(auroc_delong(scores, labels)),
        "auprc": average_precision(scores, labels),
        "brier": estimate(brier(scores, labels)),
        "calibration_intercept": estimate(fit.intercept),
        "calibration_slope": estimate(fit.slope),
        "mean_predicted": sum(scores) / len(scores),
        "thresholds": [
            asdict(threshold_row(name, value, scores, labels)) for name, value in thresholds
        ],
    }
    if curves:
        figures["roc"] = _thin(roc_points(scores, labels), ROC_POINTS_MAX)
        figures["reliability"] = [asdict(b) for b in reliability_curve(scores, labels)]
        figures["distribution"] = {
            "bins": HISTOGRAM_BINS,
            "outcome": _histogram([item for item in sample if item.label == 1]),
            "no_outcome": _histogram([item for item in sample if item.label == 0]),
        }
    return figures


def _thin(points: list[tuple[float, float]], most: int) -> list[list[float]]:
    """At most ``most`` points, evenly spread along the curve, its ends kept."""
    if len(points) <= most:
        return [list(p) for p in points]
    picks = sorted({round(i * (len(points) - 1) / (most - 1)) for i in range(most)})
    return [list(points[i]) for i in picks]


def _histogram(group: Sequence[Labelled]) -> list[float] | None:
    """The share of the group's scores in each of ``HISTOGRAM_BINS`` equal bins over
    [0, 1]; None for a group of fewer than ``PATIENTS_MIN`` patients, whose bars would
    show where a countable few scored."""
    if len({item.patient for item in group}) < PATIENTS_MIN:
        return None
    counts = [0] * HISTOGRAM_BINS
    for item in group:
        counts[min(max(int(item.score * HISTOGRAM_BINS), 0), HISTOGRAM_BINS - 1)] += 1
    return [c / len(group) for c in counts]
