"""The agent's own JSON form of a prediction and of a patient's outcome, used by HTTP
answers and NDJSON results alike."""

from __future__ import annotations

from typing import Any

from agent.types import (
    Contributions,
    FeatureValue,
    FeatureVector,
    PatientOutcome,
    Prediction,
    Refusal,
)


def feature_warnings(vector: FeatureVector) -> list[dict[str, str]]:
    """Per-feature warnings a clinician should see: imputed, out of range, unseen level."""
    warnings = []
    for feature in vector.features:
        if feature.imputed:
            warnings.append(
                {"feature": feature.name, "warning": "imputed", "detail": feature.source}
            )
        if feature.out_of_range:
            warnings.append({"feature": feature.name, "warning": "out_of_range", "detail": ""})
        if feature.unseen_category:
            warnings.append({"feature": feature.name, "warning": "unseen_category", "detail": ""})
    return warnings


def explanation(vector: FeatureVector) -> list[dict[str, Any]]:
    """Each feature's value and where it came from (the ``explain`` view)."""
    return [_explain_one(f) for f in vector.features]


def _explain_one(feature: FeatureValue) -> dict[str, Any]:
    return {
        "feature": feature.name,
        "value": feature.display,
        "model_value": feature.value,
        "unit": feature.unit,
        "source": feature.source,
        "conversion": feature.conversion,
        "imputed": feature.imputed,
        "out_of_range": feature.out_of_range,
        "unseen_category": feature.unseen_category,
    }


def prediction_json(prediction: Prediction, *, explain: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": prediction.model,
        "version": prediction.version,
        "bundle_digest": prediction.bundle_digest,
        "outputs": dict(prediction.outputs),
        "warnings": feature_warnings(prediction.vector),
    }
    if prediction.label:
        body["record"] = prediction.label
    if explain:
        body["explanation"] = explanation(prediction.vector)
    if prediction.contributions is not None:
        body["contributions"] = contributions_json(prediction.contributions)
    return body


def contributions_json(contributions: Contributions) -> dict[str, Any]:
    """Each feature's contribution to the explained output (docs/explain.md), or
    ``available: false`` with why: a model without contribution data says so."""
    if contributions.unavailable:
        return {"available": False, "detail": contributions.unavailable}
    return {
        "available": True,
        "output": contributions.output,
        "space": contributions.space,
        "base": _number(contributions.base),
        "features": [
            {"feature": name, "contribution": _number(value)}
            for name, value in contributions.values
        ],
    }


def _number(value: float) -> float | None:
    """JSON has no NaN: a contribution of a missing value (a linear model given NaN) is null."""
    return None if value != value else value


def refusal_json(refusal: Refusal) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": refusal.reason, "detail": refusal.detail}
    if refusal.feature is not None:
        body["feature"] = refusal.feature
    return body


def outcome_json(outcome: PatientOutcome, *, explain: bool = False) -> dict[str, Any]:
    """One patient's outcome: ``status`` ``scored`` with the prediction's fields, or
    ``refused`` with the reason, the feature concerned and a PHI-free detail. ``patient`` is
    the caller's own reference, echoed so it can match outcomes to patients."""
    head: dict[str, Any] = {"patient": outcome.reference or None}
    if outcome.prediction is not None:
        return {**head, "status": "scored", **prediction_json(outcome.prediction, explain=explain)}
    if outcome.refusal is None:
        raise ValueError("an outcome is either scored or refused")
    return {**head, "status": "refused", **refusal_json(outcome.refusal)}
