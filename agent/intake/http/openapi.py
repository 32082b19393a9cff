"""The OpenAPI 3.1 document the agent serves at ``/openapi.json``.

Written out rather than generated: the routes take FHIR, HL7 v2 and OIP bodies whose shape
is defined by those standards, and a hand-kept document says exactly what is accepted.
A test checks every route here exists in the app and the other way round.
"""

from __future__ import annotations

from typing import Any

from agent import __version__

_OUTCOME = {"$ref": "#/components/schemas/OperationOutcome"}
_JSON_OBJECT: dict[str, Any] = {"type": "object"}


def _json(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json(_OUTCOME, "application/fhir+json")}


_MODEL = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_OIP_ERROR = {
    "description": "error",
    **_json({"type": "object", "properties": {"error": {"type": "string"}}}),
}

_OIP_REFUSED = {
    "description": "rows refused (docs/oip.md): no output tensor; each refused row by its "
    "position, reason, feature and detail (500/503: every refusal is the model's fault)",
    **_json(
        {
            "type": "object",
            "required": ["error", "reason", "refusals"],
            "properties": {
                "error": {"type": "string"},
                "reason": {"type": "string"},
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "parameters": _JSON_OBJECT,
                "refusals": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["row", "reason", "detail"],
                        "properties": {
                            "row": {"type": "integer", "minimum": 0},
                            "reason": {"type": "string"},
                            "feature": {"type": "string"},
                            "detail": {"type": "string"},
                        },
                    },
                },
            },
        }
    ),
}

_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _JSON_OBJECT,
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": ["FP32", "FP64", "INT32", "INT64"]},
                    "data": {"type": "array"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    },
}


def _infer(path_params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "summary": "Open Inference Protocol v2: score raw feature vectors",
            "parameters": path_params,
            "requestBody": {"required": True, **_json(_INFER_REQUEST)},
            "responses": {
                "200": {"description": "outputs, one FP64 tensor each", **_json(_JSON_OBJECT)},
                "400": _OIP_ERROR,
                "404": _OIP_ERROR,
                "422": _OIP_REFUSED,
                "500": _OIP_REFUSED,
                "503": _OIP_ERROR,
            },
        }
    }


def _get(summary: str, params: list[dict[str, Any]] | None = None, *codes: str) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", **_json(_JSON_OBJECT)}}
    for code in codes:
        responses[code] = {"description": "not available", **_json(_JSON_OBJECT)}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    return {"get": operation}


def document() -> dict[str, Any]:
    predict_body = {
        "required": True,
        "content": {
            "application/fhir+json": {"schema": _JSON_OBJECT},
            "application/json": {"schema": _JSON_OBJECT},
            "application/fhir+ndjson": {"schema": {"type": "string"}},
            "x-application/hl7-v2+er7": {"schema": {"type": "string"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edge-agent",
            "version": __version__,
            "description": "On-premise scoring of FHIR R4 and HL7 v2 records with signed models.",
        },
        "paths": {
            "/": {
                "get": {
                    "summary": "status page",
                    "responses": {
                        "200": {
                            "description": "HTML",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/healthz": _get("the process is alive"),
            "/readyz": _get("every configured model is loaded and verified", None, "503"),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": _get("this document"),
            "/v1/models": _get("served models: name, version, digest, signer, inputs"),
            "/v1/models/{name}/predict": {
                "post": {
                    "summary": "score FHIR R4 (resource, Bundle, NDJSON) or HL7 v2 records",
                    "parameters": [
                        _MODEL,
                        {
                            "name": "explain",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        },
                        {
                            "name": "format",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["json", "fhir"]},
                        },
                        {
                            "name": "as_of",
                            "in": "query",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                    ],
                    "requestBody": predict_body,
                    "responses": {
                        "200": {
                            "description": "predictions (JSON, or FHIR RiskAssessment)",
                            **_json(_JSON_OBJECT),
                        },
                        "400": _error("the record is malformed"),
                        "404": _error("no such model"),
                        "408": _error("the body did not arrive in time"),
                        "413": _error("body too large"),
                        "415": _error("unsupported content type"),
                        "422": _error("the record cannot be mapped to the model's features"),
                        "503": _error("the model is not loaded yet"),
                    },
                }
            },
            "/v1/models/{name}/outcomes": {
                "post": {
                    "summary": "outcomes joined to earlier predictions (live performance)",
                    "parameters": [_MODEL],
                    "requestBody": {
                        "required": True,
                        **_json(
                            {
                                "type": "object",
                                "required": ["outcomes"],
                                "properties": {
                                    "outcomes": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["patient", "label"],
                                            "properties": {
                                                "patient": {"type": "string"},
                                                "label": {"type": "integer", "enum": [0, 1]},
                                                "time": {"type": "string", "format": "date-time"},
                                            },
                                        },
                                    }
                                },
                            }
                        ),
                    },
                    "responses": {
                        "200": {"description": "received and joined counts", **_json(_JSON_OBJECT)},
                        "400": _error("the body is malformed"),
                        "404": _error("no such model"),
                        "408": _error("the body did not arrive in time"),
                        "409": _error("live performance is not enabled on this site"),
                        "413": _error("body too large"),
                        "415": _error("unsupported content type"),
                        "503": _error("the model is not loaded yet"),
                    },
                }
            },
            "/v2/health/live": _get("OIP liveness"),
            "/v2/health/ready": _get("OIP readiness", None, "503"),
            "/v2/models/{name}": _get("OIP model metadata", [_MODEL], "404", "503"),
            "/v2/models/{name}/ready": _get("OIP model readiness", [_MODEL], "404", "503"),
            "/v2/models/{name}/infer": _infer([_MODEL]),
            "/v2/models/{name}/versions/{version}": _get(
                "OIP model metadata", [_MODEL, _VERSION], "404", "503"
            ),
            "/v2/models/{name}/versions/{version}/ready": _get(
                "OIP model readiness", [_MODEL, _VERSION], "404", "503"
            ),
            "/v2/models/{name}/versions/{version}/infer": _infer([_MODEL, _VERSION]),
            "/cds-services": _get("CDS Hooks discovery"),
            "/cds-services/{id}": {
                "post": {
                    "summary": "CDS Hooks patient-view service",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        **_json(
                            {"type": "object", "required": ["hook", "hookInstance", "context"]}
                        ),
                    },
                    "responses": {
                        "200": {"description": "cards", **_json(_JSON_OBJECT)},
                        "400": {"description": "bad request", **_json(_JSON_OBJECT)},
                        "404": {"description": "no such service", **_json(_JSON_OBJECT)},
                        "412": {"description": "prefetch missing", **_json(_JSON_OBJECT)},
                        "422": {"description": "cannot be mapped", **_json(_JSON_OBJECT)},
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "OperationOutcome": {
                    "type": "object",
                    "required": ["resourceType", "issue"],
                    "properties": {
                        "resourceType": {"const": "OperationOutcome"},
                        "issue": {"type": "array"},
                    },
                }
            }
        },
    }
