"""A prediction as a FHIR R4 RiskAssessment, the resource EHRs file model scores under."""

from __future__ import annotations

from typing import Any

from agent.outputs.prediction_json import feature_warnings
from agent.types import Prediction

AGENT_SYSTEM = "urn:edge-inference-agent"


def risk_assessment(prediction: Prediction, risk_output: str) -> dict[str, Any]:
    """RiskAssessment with the model, version and bundle digest as ``method`` and
    ``basis``-free provenance (the inputs stay with the caller, not in the answer).

    ``subject`` is the patient as the input named it (``Patient/7``, or PID-3's identifier
    for HL7 v2); ``occurrenceDateTime`` is the as-of time the record was read for, not the
    wall clock: a score of yesterday's record is about yesterday."""
    probability = prediction.outputs[risk_output]
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "method": {
            "coding": [
                {
                    "system": f"{AGENT_SYSTEM}/model",
                    "code": f"{prediction.model}@{prediction.version}",
                    "display": f"{prediction.model} {prediction.version}",
                }
            ],
            "text": f"bundle sha256:{prediction.bundle_digest}",
        },
        "prediction": [
            {
                "outcome": {"text": risk_output},
                "probabilityDecimal": round(float(probability), 6),
            }
        ],
        "note": [
            {"text": f"{w['feature']}: {w['warning']}"} for w in feature_warnings(prediction.vector)
        ],
    }
    if prediction.subject:
        resource["subject"] = dict(prediction.subject)
    if prediction.as_of is not None:
        resource["occurrenceDateTime"] = prediction.as_of.isoformat(timespec="seconds")
    if not resource["note"]:
        del resource["note"]
    return resource
