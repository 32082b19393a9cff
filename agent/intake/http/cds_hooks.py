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

from agent.config import CardThresholds
from agent.errors import AgentError, RecordError
from agent.intake.http.errors import status_for
from agent.pipeline import ScoringPipeline, ServedModel
from agent.types import IntakePath, Prediction, RecordFormat, ScoreRequest

SUMMARY_MAX = 140


def _pipeline(request: Request) -> ScoringPipeline:
    pipeline: ScoringPipeline = request.app.state.pipeline
    return pipeline


def service_id(model: str) -> str:
    return f"{model}-risk"


def prefetch_templates(served: ServedModel) -> dict[str, str]:
    """Prefetch for exactly the observations this site's mapping reads."""
    # component codes and the panels that carry them: a FHIR server's code search
    # matches the panel's own code, not its components'
    wanted = {c for f in served.mapping.features for c in (*f.codes, *f.panels)}
    codes = ",".join(sorted(wanted))
    templates = {"patient": "Patient/{{context.patientId}}"}
    if codes:
        templates["observations"] = (
            "Observation?patient={{context.patientId}}&code=" + codes + "&_sort=-date&_count=200"
        )
    return templates


async def discovery(request: Request) -> Response:
    services = []
    for served in _pipeline(request).served_models():
        manifest = served.bundle.manifest
        services.append(
            {
                "hook": "patient-view",
                "id": service_id(served.name),
                "title": f"{manifest.name} {manifest.version}",
                "description": manifest.description or f"Risk score from model {manifest.name}",
                "prefetch": prefetch_templates(served),
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


def card(prediction: Prediction, risk_output: str, thresholds: CardThresholds) -> dict[str, Any]:
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
    pipeline = _pipeline(request)
    wanted = request.path_params["id"]
    served = next((s for s in pipeline.served_models() if service_id(s.name) == wanted), None)
    if served is None:
        return JSONResponse({"error": "no such CDS service"}, status_code=404)
    try:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            raise RecordError("the body is not valid JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("context"), dict):
            raise RecordError("a CDS Hooks request needs hook, hookInstance and context")
        resources = _resources(payload.get("prefetch") or {})
    except AgentError as error:
        pipeline.count_refusal(served.name, IntakePath.cds_hooks, error)
        return JSONResponse({"error": str(error)}, status_code=status_for(error))
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
        model=served.name,
        body=json.dumps(bundle).encode(),
        format=RecordFormat.fhir_json,
        intake=IntakePath.cds_hooks,
        caller=request.state.caller,
        request_id=request.state.request_id,
    )
    try:
        predictions = await run_in_threadpool(pipeline.score, score_request)
    except AgentError as error:  # already counted by the pipeline
        return JSONResponse({"error": str(error)}, status_code=status_for(error))
    # the card is about the patient in context, whatever else the prefetch held
    subject = f"Patient/{payload['context'].get('patientId')}"
    chosen = next((p for p in predictions if p.label == subject), predictions[0])
    risk_output = pipeline.risk_output(served.name)
    return JSONResponse({"cards": [card(chosen, risk_output, served.config.cards)]})


CDS_ROUTES = [
    Route("/cds-services", discovery),
    Route("/cds-services/{id}", call_service, methods=["POST"]),
]
