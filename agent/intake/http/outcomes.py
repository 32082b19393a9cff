"""``POST /v1/models/{name}/outcomes``: outcomes that arrived after the predictions (an ICU
transfer, a death, a discharge without event), joined to them in the local prediction store
to keep the live figures (AUROC, calibration, PPV) of each model version current.

The body is JSON: ``{"outcomes": [{"patient": "Patient/7", "label": 1, "time": "..."}]}``;
``patient`` names the patient as the scored records did (a Patient id or PID-3's
identifier), ``label`` is 1 when the event happened and 0 when the horizon passed without
it, ``time`` (ISO 8601, default now) is when it happened. The answer counts what was
received and what joined an earlier prediction; it echoes no patient.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.errors import AgentError, RecordError
from agent.instant import parse_instant
from agent.intake.http.errors import error_response
from agent.intake.http.predict import plane_of
from agent.jsontext import load_json
from agent.types import IntakePath, OutcomeReport

OUTCOMES_PER_REQUEST_MAX = 10_000


def outcome_reports(payload: Any, now: datetime) -> list[OutcomeReport]:
    """The reports in a request body, or RecordError naming the first bad entry by index."""
    if not isinstance(payload, dict) or not isinstance(payload.get("outcomes"), list):
        raise RecordError("the body must be an object with an 'outcomes' list")
    entries = payload["outcomes"]
    if len(entries) > OUTCOMES_PER_REQUEST_MAX:
        raise RecordError(f"more than {OUTCOMES_PER_REQUEST_MAX} outcomes in one request")
    reports = []
    for index, entry in enumerate(entries):
        where = f"outcomes[{index}]"
        if not isinstance(entry, dict):
            raise RecordError(f"{where}: expected an object")
        patient, label, time = entry.get("patient"), entry.get("label"), entry.get("time")
        if not isinstance(patient, str) or not patient or len(patient) > 256:
            raise RecordError(f"{where}.patient: a non-empty reference is required")
        if label not in (0, 1) or isinstance(label, bool):
            raise RecordError(f"{where}.label: must be 0 or 1")
        reports.append(OutcomeReport(patient, int(label), _time(time, f"{where}.time", now)))
    return reports


def _time(value: Any, where: str, now: datetime) -> datetime:
    if value is None:
        return now
    moment = parse_instant(value) if isinstance(value, str) else None
    if moment is None:
        raise RecordError(f"{where}: must be an ISO 8601 date-time")
    return moment


async def post_outcomes(request: Request) -> Response:
    plane = plane_of(request)
    name = request.path_params["name"]
    try:
        reports = outcome_reports(load_json(await request.body(), "the body"), datetime.now(UTC))
        receipt = await run_in_threadpool(plane.record_outcomes, name, reports)
    except AgentError as error:
        plane.count_refusal(name, IntakePath.http, error)
        return error_response(request.url.path, error)
    return JSONResponse({"received": receipt.received, "joined": receipt.joined})
