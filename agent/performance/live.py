"""Rolling performance figures of one model version from its labelled predictions, with the
same statistics as ``edge-agent validate`` (agent/validation), so a figure means the same
before go-live and after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.validation.calibration import recalibrate
from agent.validation.metrics import auroc_delong, brier


@dataclass(frozen=True)
class LiveFigures:
    labelled: int
    auroc: float | None
    brier: float
    calibration_slope: float | None
    ppv: Mapping[str, float | None]  # per card threshold name


def live_figures(
    pairs: Sequence[tuple[float, int]], thresholds: Mapping[str, float]
) -> LiveFigures:
    """The figures of (score, label) pairs; AUROC and slope None without both outcomes."""
    scores = [s for s, _ in pairs]
    labels = [y for _, y in pairs]
    auc = auroc_delong(scores, labels)
    slope = recalibrate(scores, labels).slope
    ppv: dict[str, float | None] = {}
    for name, threshold in thresholds.items():
        alerts = [y for s, y in pairs if s >= threshold]
        ppv[name] = sum(alerts) / len(alerts) if alerts else None
    return LiveFigures(
        labelled=len(pairs),
        auroc=auc.value if auc is not None else None,
        brier=brier(scores, labels).value,
        calibration_slope=slope.value if slope is not None else None,
        ppv=ppv,
    )
