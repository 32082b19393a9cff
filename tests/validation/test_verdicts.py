"""Verdicts: a training figure outside the local interval is called out, in the right
direction for figures where higher is better (AUROC) and lower is better (Brier)."""

from __future__ import annotations

from typing import Any

from agent.validation.verdicts import calibration_verdicts, compare_with_training


def _overall(**figures: Any) -> dict[str, Any]:
    return {"suppressed": False, "scored": 200, "positives": 20, **figures}


def _interval(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high}


def test_training_figures_are_judged_against_the_local_interval() -> None:
    overall = _overall(
        auroc=_interval(0.70, 0.65, 0.75),
        brier=_interval(0.10, 0.09, 0.11),
        prevalence=_interval(0.20, 0.18, 0.22),
        auprc=0.3,
    )
    training = {
        "holdout_auroc": 0.84,
        "val_brier": 0.05,
        "training_prevalence": 0.2,
        "holdout_auprc": 0.4,
        "holdout_accuracy": 0.9,
    }
    verdicts = {v["figure"]: v for v in compare_with_training(training, overall)}
    assert verdicts["holdout_auroc"]["status"] == "worse"
    assert "lies above" in verdicts["holdout_auroc"]["text"]
    assert verdicts["val_brier"]["status"] == "worse"  # training error lower than here
    assert verdicts["training_prevalence"]["status"] == "consistent"
    assert verdicts["holdout_auprc"]["status"] == "not_compared"
    assert verdicts["holdout_accuracy"]["status"] == "not_compared"

    better = compare_with_training({"roc_auc": 0.60, "brier": 0.2}, overall)
    assert [v["status"] for v in better] == ["better", "better"]
    rarer = compare_with_training({"prevalence": 0.3}, overall)[0]
    assert rarer["status"] == "different" and "less common here" in rarer["text"]


def test_suppressed_or_intervalless_figures_are_not_compared() -> None:
    assert compare_with_training({"auc": 0.8}, {"suppressed": True})[0]["status"] == (
        "not_compared"
    )
    alone = _overall(auroc={"value": 1.0, "low": None, "high": None})
    assert compare_with_training({"auc": 0.8}, alone)[0]["status"] == "not_compared"
    assert calibration_verdicts({"suppressed": True}) == []


def test_nothing_is_judged_on_fewer_than_ten_outcomes() -> None:
    overall = {
        **_overall(auroc=_interval(0.70, 0.65, 0.75), calibration_slope=_interval(2, 1.5, 2.5)),
        "positives": 9,
    }
    (verdict,) = compare_with_training({"holdout_auroc": 0.9, "holdout_accuracy": 0.9}, overall)[:1]
    assert verdict["status"] == "not_compared" and "fewer than 10" in verdict["text"]
    assert calibration_verdicts(overall) == []
    assert calibration_verdicts({**overall, "positives": 191}) == []  # 9 without the outcome


def test_calibration_verdicts_say_which_way_the_risks_are_off() -> None:
    overall = _overall(
        calibration_intercept=_interval(-0.5, -0.8, -0.2),
        calibration_slope=_interval(1.4, 1.1, 1.7),
    )
    intercept, slope = calibration_verdicts(overall)
    assert intercept["status"] == "worse" and "over-estimates" in intercept["text"]
    assert slope["status"] == "worse" and "too modest" in slope["text"]
    fine = _overall(
        calibration_intercept=_interval(0.1, -0.1, 0.3),
        calibration_slope=_interval(0.9, 0.7, 1.1),
    )
    assert [v["status"] for v in calibration_verdicts(fine)] == ["consistent", "consistent"]
    extreme = calibration_verdicts(_overall(calibration_slope=_interval(0.6, 0.3, 0.9)))
    assert "too extreme" in extreme[0]["text"]
