"""Plain verdicts: the bundle's own training figures beside this site's, and what the
calibration says, each as a status a dashboard can test and a sentence a clinician reads.

A training figure is judged against the local 95 % interval: outside it, the difference is
more than chance at this site's sample size. Nothing is judged on fewer than
``OUTCOMES_MIN`` moments with the outcome or without it: intervals from a handful of
events are approximations too rough to call a difference. Which training figure is which
is read from its name in the manifest (``holdout_auroc``, ``val_brier``,
``training_prevalence``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONSISTENT = "consistent"
WORSE = "worse"
BETTER = "better"
DIFFERENT = "different"
NOT_COMPARED = "not_compared"
OUTCOMES_MIN = 10  # moments with, and without, the outcome before anything is judged


def _judgeable(overall: Mapping[str, Any]) -> bool:
    if overall.get("suppressed"):
        return False
    positives = int(overall["positives"])
    return min(positives, int(overall["scored"]) - positives) >= OUTCOMES_MIN


def _kind(name: str) -> str | None:
    """Which local figure a training metric's name denotes (None: none we compute)."""
    lowered = name.lower()
    if "brier" in lowered:
        return "brier"
    if any(tag in lowered for tag in ("auprc", "average_precision", "pr_auc")):
        return "auprc"
    if any(tag in lowered for tag in ("auroc", "roc_auc")) or lowered.split("_")[-1] == "auc":
        return "auroc"
    if "prevalence" in lowered:
        return "prevalence"
    return None


def _verdict(
    figure: str, training: float | None, local: Any, status: str, text: str
) -> dict[str, Any]:
    return {"figure": figure, "training": training, "local": local, "status": status, "text": text}


def _interval(local: Mapping[str, float | None]) -> str:
    return f"{local['low']:.3f} to {local['high']:.3f}"


def compare_with_training(
    training: Mapping[str, float], overall: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One verdict per training metric of the manifest, in the manifest's order."""
    verdicts = []
    for name, reference in training.items():
        kind = _kind(name)
        local = overall.get(kind) if kind and not overall.get("suppressed") else None
        if kind is not None and not _judgeable(overall):
            text = (
                f"Not judged: fewer than {OUTCOMES_MIN} scored moments with the outcome or "
                "without it."
            )
            verdicts.append(_verdict(name, reference, local, NOT_COMPARED, text))
        elif kind == "auprc":
            text = (
                "Shown for reference: average precision moves with how common the outcome is, "
                "so the model is judged here by AUROC and calibration instead."
            )
            verdicts.append(_verdict(name, reference, local, NOT_COMPARED, text))
        elif kind is None or not isinstance(local, Mapping) or local.get("low") is None:
            text = "Not compared: no local figure with an interval to set it against."
            verdicts.append(_verdict(name, reference, local, NOT_COMPARED, text))
        else:
            verdicts.append(_judge(name, kind, reference, local))
    return verdicts


def _judge(name: str, kind: str, reference: float, local: Mapping[str, Any]) -> dict[str, Any]:
    low, high = local["low"], local["high"]
    where = f"this site's 95 % interval ({_interval(local)})"
    if low <= reference <= high:
        text = f"The training figure {reference:.3f} lies within {where}: consistent."
        return _verdict(name, reference, local, CONSISTENT, text)
    if kind == "prevalence":
        more = reference < low
        text = (
            f"The outcome is {'more' if more else 'less'} common here ({local['value']:.1%}) than "
            f"in training ({reference:.1%}): PPV and alert rates differ with it."
        )
        return _verdict(name, reference, local, DIFFERENT, text)
    higher_is_better = kind == "auroc"
    worse = (reference > high) if higher_is_better else (reference < low)
    what = "Discrimination" if kind == "auroc" else "Accuracy of the risks (Brier score)"
    side = "above" if reference > high else "below"
    text = (
        f"{what} is {'worse' if worse else 'better'} here than in training: the training "
        f"figure {reference:.3f} lies {side} {where}."
    )
    return _verdict(name, reference, local, WORSE if worse else BETTER, text)


def calibration_verdicts(overall: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the calibration intercept (ideal 0) and slope (ideal 1) say, when fitted."""
    if not _judgeable(overall):
        return []
    verdicts = []
    intercept = overall.get("calibration_intercept")
    if intercept is not None:
        if intercept["low"] <= 0 <= intercept["high"]:
            status, text = CONSISTENT, "On average the predicted risks match the observed rate."
        else:
            over = intercept["value"] < 0
            status = WORSE
            text = (
                f"The model {'over' if over else 'under'}-estimates risk on average here "
                f"(intercept {intercept['value']:.2f}, 95 % interval {_interval(intercept)}; "
                "ideal 0)."
            )
        verdicts.append(_verdict("calibration_intercept", 0.0, intercept, status, text))
    slope = overall.get("calibration_slope")
    if slope is not None:
        if slope["low"] <= 1 <= slope["high"]:
            status, text = CONSISTENT, "High and low risks are as spread out as the outcomes."
        else:
            extreme = slope["value"] < 1
            status = WORSE
            text = (
                f"Predicted risks are too {'extreme' if extreme else 'modest'} here: "
                + (
                    "high risks over-state and low risks under-state what happens"
                    if extreme
                    else "high risks under-state and low risks over-state what happens"
                )
                + f" (slope {slope['value']:.2f}, 95 % interval {_interval(slope)}; ideal 1)."
            )
        verdicts.append(_verdict("calibration_slope", 1.0, slope, status, text))
    return verdicts
