"""CDS Hooks 2.0: discovery and one ``patient-view`` service per served model.

The EHR sends the patient and observations as prefetch; the agent never calls back to the
EHR's FHIR server (nothing leaves the machine but bundle pulls), so a call without the
prefetch it needs is answered 412, as the specification asks. The answer is one card whose
summary stays under 140 characters and whose source names the model and version.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.dataplane import CardThresholdsView, ModelView
from agent.errors import AgentError, RecordError, UnknownModel
from agent.intake.http.errors import error_response
from agent.intake.http.predict import plane_of
from agent.jsontext import load_json
from agent.types import IntakePath, Prediction, RecordFormat, ScoreRequest

SUMMARY_MAX = 140


_SERVICE_SUFFIX = "-risk"


def service_id(model: str) -> str:
    return f"{model}{_SERVICE_SUFFIX}"


def model_of_service(service: str) -> str:
    """The model a service id names (``deterioration-risk`` -> ``deterioration``)."""
    return service.removesuffix(_SERVICE_SUFFIX)


def prefetch_templates(model: ModelView) -> dict[str, str]:
    """Prefetch for exactly the observations this site's mapping reads."""
    codes = ",".join(sorted(model.prefetch_codes))
    templates = {"patient": "Patient/{{context.patientId}}"}
    if codes:
        templates["observations"] = (
            "Observation?patient={{context.patientId}}&code=" + codes + "&_sort=-date&_count=200"
        )
    return templates


async def discovery(request: Request) -> Response:
    services = []
    for model in plane_of(request).models():
        services.append(
            {
                "hook": "patient-view",
                "id": service_id(model.name),
                "title": f"{model.name} {model.version}",
                "description": model.manifest.description or f"Risk score from model {model.name}",
                "prefetch": prefetch_templates(model),
            }
        )
    return JSONResponse({"services": services})


def _resources(prefetch: Any) -> list[dict[str, Any]]:
    """Flatten prefetch values (resources or search-result Bundles) into resources."""
    if not isinstance(prefetch, dict):
        raise RecordError("prefetch must be an object")
    resources: list[dict[str, Any]] = []
    for value in prefetch.values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry") or []:
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    resources.append(entry["resource"])
        elif "resourceType" in value:
            resources.append(value)
    return resources


def card(
    prediction: Prediction, risk_output: str, thresholds: CardThresholdsView
) -> dict[str, Any]:
    risk = float(prediction.outputs[risk_output])
    indicator = (
        "critical"
        if risk >= thresholds.critical
        else "warning"
        if risk >= thresholds.warning
        else "info"
    )
    summary = f"{prediction.model} risk {risk:.0%} ({indicator})"[:SUMMARY_MAX]
    imputed = [f.name for f in prediction.vector.features if f.imputed]
    detail = f"Model {prediction.model} {prediction.version} scored this patient at {risk:.1%}."
    if imputed:
        detail += " Imputed with training medians (not in the record): " + ", ".join(imputed) + "."
    return {
        "summary": summary,
        "indicator": indicator,
        "detail": detail,
        "source": {"label": f"edge-agent {prediction.model} {prediction.version}"},
    }


async def call_service(request: Request) -> Response:
    plane = plane_of(request)
    name = model_of_service(request.path_params["id"])
    try:
        model = plane.model(name)  # taken once: scored and answered by this version
        if request.path_params["id"] != service_id(name):
            raise UnknownModel("no such CDS service")
        payload = load_json(await request.body(), "the body")
        if not isinstance(payload, dict) or not isinstance(payload.get("context"), dict):
            raise RecordError("a CDS Hooks request needs hook, hookInstance and context")
        resources = _resources(payload.get("prefetch") or {})
    except AgentError as error:
        plane.count_refusal(name, IntakePath.cds_hooks, error)
        return error_response(request.url.path, error)
    if not resources:
        return JSONResponse(
            {"error": "prefetch with the patient and observations is required"},
            status_code=412,
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    score_request = ScoreRequest(
        model=name,
        body=json.dumps(bundle).encode(),
        format=RecordFormat.fhir_json,
        intake=IntakePath.cds_hooks,
        caller=request.state.caller,
        request_id=request.state.request_id,
    )
    try:
        result = await run_in_threadpool(plane.score, score_request, model)
    except AgentError as error:  # already counted by the data plane
        return error_response(request.url.path, error)
    # the card is about the patient in context, whatever else the prefetch held
    subject = f"Patient/{payload['context'].get('patientId')}"
    chosen = next((o for o in result.outcomes if o.reference == subject), result.outcomes[0])
    if chosen.prediction is None or chosen.refusal is not None:
        # not scored: a 422 saying why, never a card (the work was not done)
        refusal = chosen.refusal
        return JSONResponse(
            {
                "error": refusal.detail if refusal else "not scored",
                "reason": refusal.reason if refusal else "internal",
            },
            status_code=422,
        )
    return JSONResponse({"cards": [card(chosen.prediction, model.risk_output, model.cards)]})


CDS_ROUTES = [
    Route("/cds-services", discovery),
    Route("/cds-services/{id}", call_service, methods=["POST"]),
]
