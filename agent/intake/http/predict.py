"""``POST /v1/models/{name}/predict``: FHIR R4 or HL7 v2 records in, one outcome per patient.

The model is taken once, at the start, and the answer rendered from that same view. The
status says whether the work was done: 200 when at least one patient was scored (each
patient's outcome listed, refused ones with their reason), 422 with an OperationOutcome of
one issue per refused patient when none was.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.dataplane import DataPlane, ModelView
from agent.errors import AgentError, RecordError
from agent.instant import parse_instant
from agent.intake.http.errors import FHIR_JSON, error_response, status_for_refusals
from agent.intake.http.guard import RECORD_FORMATS, media_type
from agent.outputs.operation_outcome import refusals_outcome
from agent.outputs.prediction_json import outcome_json
from agent.outputs.riskassessment import risk_assessment
from agent.types import IntakePath, ScoreRequest, ScoreResult


def plane_of(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.plane
    return plane


def _as_of(request: Request) -> datetime | None:
    text = request.query_params.get("as_of")
    if not text:
        return None
    moment = parse_instant(text)
    if moment is None:
        raise RecordError("as_of must be an ISO 8601 date-time")
    return moment


def _wants_fhir(request: Request) -> bool:
    if request.query_params.get("format") == "fhir":
        return True
    return FHIR_JSON in request.headers.get("accept", "")


async def predict(request: Request) -> Response:
    plane = plane_of(request)
    name = request.path_params["name"]
    try:
        model = plane.model(name)
        body = await request.body()  # read, capped and timed by the guard
        score_request = ScoreRequest(
            model=name,
            body=body,
            format=RECORD_FORMATS[media_type(request.headers)],  # the guard checked the type
            intake=IntakePath.http,
            as_of=_as_of(request),
            caller=request.state.caller,
            request_id=request.state.request_id,
            explain=request.query_params.get("explain") == "true",
        )
    except AgentError as error:
        plane.count_refusal(name, IntakePath.http, error)
        return error_response(request.url.path, error)
    try:
        if len(body) <= plane.limits.inline_score_max:
            result = plane.score(score_request, model)
        else:
            result = await run_in_threadpool(plane.score, score_request, model)
    except AgentError as error:  # already counted by the data plane
        return error_response(request.url.path, error)
    if not result.predictions:
        refusals = [o.refusal for o in result.outcomes if o.refusal is not None]
        return JSONResponse(
            refusals_outcome(result.outcomes),
            status_code=status_for_refusals(refusals),
            media_type=FHIR_JSON,
        )
    if _wants_fhir(request):
        return JSONResponse(fhir_answer(result, model), media_type=FHIR_JSON)
    return JSONResponse(json_answer(result, explain=score_request.explain))


def json_answer(result: ScoreResult, *, explain: bool) -> dict[str, Any]:
    return {
        "model": result.model,
        "version": result.version,
        "bundle_digest": result.bundle_digest,
        "as_of": result.as_of.isoformat(timespec="seconds"),
        "scored": len(result.predictions),
        "refused": len(result.refused),
        "predictions": [outcome_json(o, explain=explain) for o in result.outcomes],
    }


def fhir_answer(result: ScoreResult, model: ModelView) -> dict[str, Any]:
    """A RiskAssessment for one scored patient; otherwise a collection Bundle of them, with
    an OperationOutcome entry naming every refused patient."""
    resources = [risk_assessment(p, model.risk_output) for p in result.predictions]
    if len(resources) == 1 and not result.refused:
        return resources[0]
    entries = [{"resource": r} for r in resources]
    if result.refused:
        entries.append({"resource": refusals_outcome(result.refused)})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
