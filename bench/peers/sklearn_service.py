"""The peer services: POST a FHIR Bundle, get the deterioration probability.

    python -m bench.peers.sklearn_service --engine sklearn --model MODEL.pkl --port 8081
    python -m bench.peers.sklearn_service --engine onnxruntime --port 8082

Peer A (``sklearn``) unpickles the scikit-learn estimator; peer B (``onnxruntime``) runs
fixtures/demo/model.onnx with one intra-op thread and needs no scikit-learn (the training
medians come from fixtures/demo/reference.csv). Everything else is the same code:
``fhir.resources`` R4B validation of the whole Bundle, ``bench.peers.mapping``, a Starlette
app under uvicorn with the access log off, the work done in the thread pool as the agent
does it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.peers.mapping import Unmappable, features, parse_as_of
from bench.peers.model import FEATURES, ONNX_MODEL, PeerModel, load_pickled, reference_medians

Predictor = Callable[[Sequence[Sequence[float]]], list[float]]


def sklearn_predictor(model: PeerModel) -> Predictor:
    def predict(rows: Sequence[Sequence[float]]) -> list[float]:
        x = np.asarray(rows, dtype=np.float32)
        return [float(p) for p in model.estimator.predict_proba(x)[:, 1]]

    return predict


def onnxruntime_predictor(onnx_path: Path = ONNX_MODEL) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name

    def predict(rows: Sequence[Sequence[float]]) -> list[float]:
        probabilities = session.run(None, {feed: np.asarray(rows, dtype=np.float32)})[1]
        return [float(p[1]) for p in probabilities]  # skl2onnx's ZipMap: one dict per row

    return predict


def score_bundle(body: bytes, as_of_text: str | None, medians: dict[str, float]) -> list[float]:
    """Validate (fhir.resources R4B) and map one Bundle; the model's input row."""
    from fhir.resources.R4B.bundle import Bundle

    document = json.loads(body)
    Bundle.model_validate(document)
    return features(document, parse_as_of(as_of_text), medians, FEATURES)


def create_app(medians: dict[str, float], predict: Predictor) -> Starlette:
    def handle(body: bytes, as_of: str | None) -> dict[str, Any]:
        row = score_bundle(body, as_of, medians)
        return {"probability": predict([row])[0], "features": dict(zip(FEATURES, row, strict=True))}

    async def predict_route(request: Request) -> Response:
        body = await request.body()
        try:
            result = await run_in_threadpool(handle, body, request.query_params.get("as_of"))
        except (ValidationError, ValueError) as exc:  # Unmappable and bad JSON are ValueErrors
            status = 422 if isinstance(exc, Unmappable) else 400
            return JSONResponse({"error": type(exc).__name__}, status_code=status)
        return JSONResponse(result)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/predict", predict_route, methods=["POST"]), Route("/healthz", healthz)]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="peer service for the benchmarks")
    parser.add_argument("--engine", choices=["sklearn", "onnxruntime"], required=True)
    parser.add_argument("--model", type=Path, help="sklearn: the pickle of pickled_model()")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.engine == "sklearn":
        if args.model is None:
            parser.error("--engine sklearn needs --model")
        model = load_pickled(args.model)
        medians, predict = model.medians, sklearn_predictor(model)
    else:
        medians, predict = reference_medians(), onnxruntime_predictor()
    uvicorn.run(
        create_app(medians, predict),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
