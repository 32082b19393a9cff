"""FHIR OperationOutcome: how the agent says, in FHIR, that something was not done.

Used for a request-level error (one issue) and for refused patients (one issue each, naming
the caller's own reference to the patient, the reason slug and the feature concerned)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.types import PatientOutcome


def operation_outcome(
    message: str, *, code: str = "processing", severity: str = "error", reason: str | None = None
) -> dict[str, Any]:
    """A FHIR OperationOutcome with one issue (FHIR's own error shape)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if reason is not None:
        issue["details"] = {"text": reason}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def refusals_outcome(outcomes: Sequence[PatientOutcome]) -> dict[str, Any]:
    """One issue per refused patient: ``details.text`` the reason, ``diagnostics`` the
    patient's reference and the PHI-free detail, ``expression`` the feature concerned."""
    issues = []
    for outcome in outcomes:
        refusal = outcome.refusal
        if refusal is None:
            continue
        who = f"patient {outcome.reference}" if outcome.reference else "record"
        issue: dict[str, Any] = {
            "severity": "error",
            "code": "processing",
            "details": {"text": refusal.reason},
            "diagnostics": f"{who}: {refusal.detail}",
        }
        if refusal.feature is not None:
            issue["expression"] = [refusal.feature]
        issues.append(issue)
    return {"resourceType": "OperationOutcome", "issue": issues}
