"""Shared by the compiler tests: compile an ONNX model, run it in the real runtime, and run
the same model in onnxruntime, in the shapes the parity assertions compare."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from agent.compiler.build import compile_onnx
from agent.limits import Limits
from agent.runtime.model import WasmModel


def run_compiled(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """ABI outputs for ``x`` and the output column names' classes (for labels)."""
    compiled = compile_onnx(model, max_batch=64)
    runtime = WasmModel.load(compiled.wasm, limits=Limits())
    out = np.asarray(runtime.predict(x.astype(np.float32).tolist()), dtype=np.float64)
    classes = compiled.signature.outputs[0].classes
    return out, classes


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds, column = {}, 0
    for info in session.get_inputs():  # the ABI row holds the graph's inputs side by side
        width = int(info.shape[1])
        dtype = np.int64 if info.type == "tensor(int64)" else np.float32
        feeds[info.name] = x[:, column : column + width].astype(dtype)
        column += width
    results = session.run(None, feeds)
    arrays = []
    for result in results:
        if isinstance(result, list):  # ZipMap: a list of {class: probability}
            keys = list(result[0])
            result = np.array([[row[k] for k in keys] for row in result])
        arrays.append(np.asarray(result))
    return arrays


def label_indices(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in labels.reshape(-1)]
    return np.array([classes.index(t) for t in text])
