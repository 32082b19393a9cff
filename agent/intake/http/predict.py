"""``POST /v1/models/{name}/predict``: FHIR R4 or HL7 v2 records in, one outcome per patient.

The model is taken once, at the start, and the answer rendered from that same view. The
status says whether the work was done: 200 when at least one patient was scored (each
patient's outcome listed, refused ones with their reason), 422 with an OperationOutcome of
one issue per refused patient when none was.

The busiest route is a bare ASGI app rather than a Starlette endpoint: its two headers,
three query parameters and what the guard put in ``state`` are read straight from the
scope, not through Starlette's ``Headers``, ``QueryParams`` and ``State`` (only the body is
read through a ``Request``), about 10 us of CPU per request of the ~0.3 ms an answer costs
outside scoring (measured on the vitals bundle, bench.inputs). What it reads is what
Starlette would answer: a header's first value, a query parameter's last.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agent.dataplane import DataPlane, ModelView
from agent.errors import AgentError, RecordError
from agent.instant import parse_instant
from agent.intake.http.errors import FHIR_JSON, error_response, status_for_refusals
from agent.intake.http.guard import RECORD_FORMATS, header, media_type
from agent.intake.http.jsonbody import JsonBody
from agent.outputs.operation_outcome import refusals_outcome
from agent.outputs.prediction_json import outcome_json
from agent.outputs.riskassessment import risk_assessment
from agent.types import IntakePath, ScoreRequest, ScoreResult


def plane_of(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.plane
    return plane


def _as_of(query: dict[str, str]) -> datetime | None:
    text = query.get("as_of")
    if not text:
        return None
    moment = parse_instant(text)
    if moment is None:
        raise RecordError("as_of must be an ISO 8601 date-time")
    return moment


class Predict:
    """The route's ASGI app (see the module docstring)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._answer(scope, receive)
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive) -> Response:
        plane: DataPlane = scope["app"].state.plane
        name: str = scope["path_params"]["name"]
        path: str = scope["path"]
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        state = scope["state"]
        try:
            model = plane.model(name)
            body = await Request(scope, receive).body()  # read, capped and timed by the guard
            score_request = ScoreRequest(
                model=name,
                body=body,
                format=RECORD_FORMATS[media_type(scope)],  # the guard checked the type
                intake=IntakePath.http,
                as_of=_as_of(query),
                caller=state["caller"],
                request_id=state["request_id"],
                explain=query.get("explain") == "true",
            )
        except AgentError as error:
            plane.count_refusal(name, IntakePath.http, error)
            return error_response(path, error)
        try:
            if len(body) <= plane.limits.inline_score_max:
                result = plane.score(score_request, model)
            else:
                result = await run_in_threadpool(plane.score, score_request, model)
        except AgentError as error:  # already counted by the data plane
            return error_response(path, error)
        if not result.predictions:
            refusals = [o.refusal for o in result.outcomes if o.refusal is not None]
            return JsonBody(
                refusals_outcome(result.outcomes),
                status_code=status_for_refusals(refusals),
                media_type=FHIR_JSON,
            )
        if query.get("format") == "fhir" or FHIR_JSON in header(scope, b"accept"):
            return JsonBody(fhir_answer(result, model), media_type=FHIR_JSON)
        return JsonBody(json_answer(result, explain=score_request.explain))


predict = Predict()


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
