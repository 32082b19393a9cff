"""The HTTP edge's choice of status code and body for each typed agent error.

Domain errors carry no HTTP codes (see agent/errors.py); this table is the only place that
decides them. Bodies carry the error's own PHI-free message, never a stack trace.
"""

from __future__ import annotations

from typing import Any

from agent import errors

_STATUS: tuple[tuple[type[errors.AgentError], int], ...] = (
    (errors.UnsupportedMediaType, 415),
    (errors.RequestTooLarge, 413),
    (errors.RequestTimeout, 408),
    (errors.RecordError, 400),
    (errors.UnmappableRecord, 422),
    (errors.MappingError, 422),
    (errors.UnknownModel, 404),
    (errors.StoreError, 503),
    (errors.ModelDeadline, 503),
    (errors.RuntimeFault, 500),
)


def status_for(error: errors.AgentError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def operation_outcome(
    message: str, *, code: str = "processing", severity: str = "error"
) -> dict[str, Any]:
    """A FHIR OperationOutcome with one issue (FHIR's own error shape)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}],
    }


def outcome_for(error: errors.AgentError) -> dict[str, Any]:
    code = {400: "invalid", 415: "not-supported", 422: "processing", 404: "not-found"}.get(
        status_for(error), "exception"
    )
    outcome = operation_outcome(str(error), code=code)
    outcome["issue"][0]["details"] = {"text": error.reason}
    return outcome
