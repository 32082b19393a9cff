"""The one place validation calls the scoring pipeline.

Kept to a single function so that validation follows the live path wherever it goes: the
same parsing, windows, imputation and refusals, because it is the same call.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from agent.dataplane import DataPlane
from agent.errors import AgentError
from agent.types import IntakePath, RecordFormat, ScoreRequest

CALLER = "validate"  # the caller the audit log records for validation scorings


def score_one(
    plane: DataPlane, model: str, body: bytes, fmt: RecordFormat, as_of: datetime
) -> tuple[Mapping[str, float] | None, str | None]:
    """One patient's record scored as of ``as_of``: ``(outputs, None)`` when scored,
    ``(None, reason)`` when it was refused (the outcome's reason, or the request's)."""
    request = ScoreRequest(
        model=model, body=body, format=fmt, intake=IntakePath.cli, as_of=as_of, caller=CALLER
    )
    try:
        result = plane.score(request)
    except AgentError as exc:
        return None, exc.reason
    if len(result.outcomes) != 1:
        return None, "not_one_patient"
    [outcome] = result.outcomes
    if outcome.prediction is None:
        return None, outcome.refusal.reason if outcome.refusal else "internal"
    return outcome.prediction.outputs, None
