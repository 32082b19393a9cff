"""The Open Inference Protocol v2 (KServe, Triton, MLServer) for raw feature vectors.

Inputs come either as one tensor of shape [rows, features] in manifest order, or as one
tensor per feature named after it, each of shape [rows]; NaN (JSON ``null``) is missing.
Each row is read under the site mapping's rules, as a record is (docs/oip.md). Outputs are
one FP64 tensor per manifest output when every row was scored; when any row is refused,
none: the protocol's ``{"error": ...}`` body names each refused row and why (``_refused``).
"""

from __future__ import annotations

import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.dataplane import ModelView
from agent.errors import AgentError, RecordError
from agent.intake.http.errors import error_response, status_for, status_for_refusals
from agent.intake.http.predict import plane_of
from agent.jsontext import load_json
from agent.outputs.prediction_json import refusal_json
from agent.types import IntakePath, ScoreResult

_NUMERIC = {
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "BOOL",
}


def _model(request: Request) -> ModelView:
    return plane_of(request).model(request.path_params["name"], request.path_params.get("version"))


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    is_ready = all(reason is None for reason in plane_of(request).readiness().values())
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def model_metadata(request: Request) -> Response:
    try:
        model = _model(request)
    except AgentError as error:
        return error_response(request.url.path, error)
    manifest = model.manifest
    return JSONResponse(
        {
            "name": model.name,
            "versions": [model.version],
            "platform": "edge-agent-wasm",
            "inputs": [
                {"name": f.name, "datatype": "FP64", "shape": [-1]} for f in manifest.inputs
            ],
            "outputs": [
                {"name": o.name, "datatype": "FP64", "shape": [-1]} for o in manifest.outputs
            ],
        }
    )


async def model_ready(request: Request) -> Response:
    try:
        model = _model(request)
    except AgentError as error:  # unknown model or version: 404; not loaded yet: 503
        return JSONResponse(
            {"name": request.path_params["name"], "ready": False}, status_code=status_for(error)
        )
    return JSONResponse({"name": model.name, "ready": True})


def rows_from_inputs(inputs: Any, feature_names: list[str]) -> list[list[float]]:
    """Turn OIP ``inputs`` into feature rows in manifest order, or raise ``RecordError``."""
    if not isinstance(inputs, list) or not inputs:
        raise RecordError("'inputs' must be a non-empty list of tensors")
    tensors: dict[str, tuple[list[int], list[float]]] = {}
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise RecordError(f"inputs[{index}] must be an object")
        name, shape, datatype, data = (tensor.get(k) for k in ("name", "shape", "datatype", "data"))
        if (
            not isinstance(name, str)
            or not isinstance(shape, list)
            or not isinstance(datatype, str)  # an object or list is not hashable
            or datatype not in _NUMERIC
        ):
            raise RecordError(f"inputs[{index}] needs a name, a shape and a numeric datatype")
        values = _flatten(data, index)
        if not all(isinstance(d, int) and d >= 0 for d in shape) or math.prod(shape) != len(values):
            raise RecordError(f"inputs[{index}] shape does not match its data")
        tensors[name] = (shape, values)
    width = len(feature_names)
    if len(tensors) == 1:
        shape, values = next(iter(tensors.values()))
        if (len(shape) == 2 and shape[1] == width) or (len(shape) == 1 and shape[0] == width):
            return [values[i : i + width] for i in range(0, len(values), width)]
    missing = [n for n in feature_names if n not in tensors]
    if missing:
        raise RecordError(
            f"give one tensor of shape [rows, {width}] or one tensor per feature; "
            f"missing: {', '.join(missing)}"
        )
    lengths = {len(tensors[n][1]) for n in feature_names}
    if len(lengths) != 1:
        raise RecordError("per-feature tensors must all have the same length")
    return [list(row) for row in zip(*(tensors[n][1] for n in feature_names), strict=True)]


def _flatten(data: Any, index: int) -> list[float]:
    out: list[float] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, bool | int | float):
            number = float(item)
            if math.isinf(number):
                raise RecordError(f"inputs[{index}].data must hold finite numbers")
            out.append(number)
        elif item is None:
            out.append(math.nan)
        else:
            raise RecordError(f"inputs[{index}].data must hold numbers")
    return out


async def infer(request: Request) -> Response:
    plane = plane_of(request)
    try:
        model = _model(request)  # taken once: scored and answered by this version
        raw = await request.body()
        payload = load_json(raw, "the body")
        if not isinstance(payload, dict):
            raise RecordError("the body must be a JSON object")
        rows = rows_from_inputs(payload.get("inputs"), model.manifest.feature_names())
    except AgentError as error:
        plane.count_refusal(request.path_params["name"], IntakePath.oip, error)
        return error_response(request.url.path, error)
    try:
        result = await run_in_threadpool(
            plane.score_vectors,
            model,
            rows,
            IntakePath.oip,
            caller=request.state.caller,
            request_id=request.state.request_id,
            body=raw,
        )
    except AgentError as error:  # counted by the data plane
        return error_response(request.url.path, error)
    if result.refused:  # each refused row counted by the data plane
        return _refused(result, model)
    results = [p.outputs for p in result.predictions]
    wanted = {o.get("name") for o in payload.get("outputs") or [] if isinstance(o, dict)}
    names = [o.name for o in model.manifest.outputs if not wanted or o.name in wanted]
    body: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version,
        "parameters": {"bundle_digest": model.digest},
        "outputs": [
            {
                "name": n,
                "shape": [len(results)],
                "datatype": "FP64",
                "data": [r[n] for r in results],
            }
            for n in names
        ],
    }
    if isinstance(payload.get("id"), str):
        body["id"] = payload["id"]
    return JSONResponse(body)


def _refused(result: ScoreResult, model: ModelView) -> Response:
    """Any row refused: no output tensor at all, since a tensor has no value that reads as
    "not scored" (a NaN compares false with every threshold: a client would read it as low
    risk). The protocol's error body, with every refused row by its position, reason,
    feature and a PHI-free detail; 422, or 500/503 when every refusal is the model's fault
    (``status_for_refusals``, as ``/predict`` when no patient was scored)."""
    refused = [(i, o.refusal) for i, o in enumerate(result.outcomes) if o.refusal is not None]
    first_row, first = refused[0]
    return JSONResponse(
        {
            "error": f"{len(refused)} of {len(result.outcomes)} rows not scored; "
            f"row {first_row}: {first.detail}",
            "reason": first.reason,
            "model_name": model.name,
            "model_version": model.version,
            "parameters": {"bundle_digest": model.digest},
            "refusals": [{"row": i, **refusal_json(r)} for i, r in refused],
        },
        status_code=status_for_refusals([r for _, r in refused]),
    )


OIP_ROUTES = [
    Route("/v2/health/live", live),
    Route("/v2/health/ready", ready),
    Route("/v2/models/{name}", model_metadata),
    Route("/v2/models/{name}/ready", model_ready),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready),
    Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
]
