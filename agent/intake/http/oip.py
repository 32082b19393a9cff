"""The Open Inference Protocol v2 (KServe, Triton, MLServer) for raw feature vectors.

Inputs come either as one tensor of shape [rows, features] in manifest order, or as one
tensor per feature named after it, each of shape [rows]. Outputs are one FP64 tensor per
manifest output. Errors use the protocol's ``{"error": ...}`` body.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.errors import AgentError, RecordError, UnknownModel
from agent.intake.http.errors import status_for
from agent.pipeline import ScoringPipeline, ServedModel
from agent.types import IntakePath

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


def _pipeline(request: Request) -> ScoringPipeline:
    pipeline: ScoringPipeline = request.app.state.pipeline
    return pipeline


def _error(error: AgentError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=status_for(error))


def _served(request: Request) -> ServedModel:
    served = _pipeline(request).served(request.path_params["name"])
    version = request.path_params.get("version")
    if version is not None and version != served.version:
        raise UnknownModel(f"version {version} is not the one served")
    return served


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    is_ready = _pipeline(request).ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def model_metadata(request: Request) -> Response:
    try:
        served = _served(request)
    except AgentError as error:
        return _error(error)
    manifest = served.bundle.manifest
    return JSONResponse(
        {
            "name": manifest.name,
            "versions": [manifest.version],
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
        served = _served(request)
    except AgentError as error:  # unknown model or version: 404; not loaded yet: 503
        return JSONResponse(
            {"name": request.path_params["name"], "ready": False}, status_code=status_for(error)
        )
    return JSONResponse({"name": served.name, "ready": True})


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
            out.append(float(item))
        elif item is None:
            out.append(math.nan)
        else:
            raise RecordError(f"inputs[{index}].data must hold numbers")
    return out


async def infer(request: Request) -> Response:
    pipeline = _pipeline(request)
    try:
        served = _served(request)
        try:
            payload = await request.json()
        except ValueError:
            raise RecordError("the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise RecordError("the body must be a JSON object")
        rows = rows_from_inputs(payload.get("inputs"), served.bundle.manifest.feature_names())
    except AgentError as error:
        pipeline.count_refusal(request.path_params["name"], IntakePath.oip, error)
        return _error(error)
    try:
        # Scored by the model taken above, even if a new version is swapped in meanwhile.
        results = await run_in_threadpool(
            functools.partial(pipeline.score_vector, served=served),
            served.name,
            rows,
            IntakePath.oip,
        )
    except AgentError as error:
        return _error(error)
    wanted = {o.get("name") for o in payload.get("outputs") or [] if isinstance(o, dict)}
    names = [o.name for o in served.bundle.manifest.outputs if not wanted or o.name in wanted]
    body: dict[str, Any] = {
        "model_name": served.name,
        "model_version": served.version,
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
