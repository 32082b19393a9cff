"""The HTTP edge's choice of status code and body for each typed agent error.

Domain errors carry no HTTP codes (see agent/errors.py); this table is the only place that
decides them, and ``error_response`` the only place that renders them, in the body shape of
the protocol the path speaks (FHIR OperationOutcome, the Open Inference Protocol's and CDS
Hooks' ``{"error": ...}``). Bodies carry the error's own PHI-free message, never a trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse

from agent import errors
from agent.outputs.operation_outcome import operation_outcome
from agent.types import Refusal

FHIR_JSON = "application/fhir+json"

_STATUS: tuple[tuple[type[errors.AgentError], int], ...] = (
    (errors.UnsupportedMediaType, 415),
    (errors.RequestTooLarge, 413),
    (errors.RequestTimeout, 408),
    (errors.NoPatient, 422),
    (errors.RecordError, 400),
    (errors.UnmappableRecord, 422),
    (errors.MappingError, 422),
    (errors.UnknownModel, 404),
    (errors.NotEnabled, 409),
    (errors.StoreError, 503),
    (errors.ModelDeadline, 503),
    (errors.RuntimeFault, 500),
)

_FHIR_CODE = {
    400: "invalid",
    415: "not-supported",
    422: "processing",
    404: "not-found",
    413: "too-costly",
    408: "timeout",
}


def status_for(error: errors.AgentError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


_RUNTIME_STATUS = {kind.reason: status_for(kind("")) for kind in errors.runtime_faults()}


def status_for_refusals(refusals: Sequence[Refusal]) -> int:
    """The status of an answer in which no patient was scored: 422 (the records could not be
    scored as they are), unless every patient failed for the model's sake (a trap: 500, a
    deadline: 503): then it is the agent's failure and says so."""
    statuses = {_RUNTIME_STATUS.get(r.reason, 422) for r in refusals}
    return statuses.pop() if len(statuses) == 1 else 422


def outcome_for(error: errors.AgentError) -> dict[str, Any]:
    code = _FHIR_CODE.get(status_for(error), "exception")
    return operation_outcome(str(error), code=code, reason=error.reason)


def _speaks_plain_json(path: str) -> bool:
    """The Open Inference Protocol and CDS Hooks answer errors as ``{"error": ...}``."""
    return path.startswith("/v2/") or path.startswith("/cds-services")


def error_response(path: str, error: errors.AgentError, **headers: str) -> JSONResponse:
    """``error`` rendered for the protocol ``path`` speaks."""
    status = status_for(error)
    if _speaks_plain_json(path):
        return JSONResponse(
            {"error": str(error), "reason": error.reason}, status_code=status, headers=headers
        )
    return JSONResponse(
        outcome_for(error), status_code=status, media_type=FHIR_JSON, headers=headers
    )
