"""The SIMD dense kernels on whole batches, as the bench runs them: an MLP and linear
models scored from a float32 matrix (``predict_matrix``) agree with onnxruntime and with
scikit-learn on random batches whose row counts leave a partial tile (not a multiple of
``TILE_ROWS``) and span several runtime calls; hidden layers fuse their Relu and chain
their tiles without changing a bit."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agent.compiler.build import compile_onnx
from agent.compiler.graph import FUSED_DOMAIN, fuse_bias, fuse_relu
from agent.compiler.ir import TILE_ROWS
from agent.limits import Limits
from agent.runtime.model import WasmModel
from tests.compiler.compiler_helpers import run_onnxruntime

FEATURES = 13
MAX_BATCH = 64  # small, so a batch of 150 rows takes three runtime calls
ROWS = [1, 2, TILE_ROWS - 1, TILE_ROWS + 1, 2 * TILE_ROWS + 3, MAX_BATCH + 1, 150]


def _data(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)


def _fit(kind: str) -> Any:
    x = _data(400, 0)
    score = x[:, 0] - 2 * x[:, 3] + x[:, 5] * x[:, 7]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes
        if kind == "mlp-classifier":
            return make_pipeline(
                StandardScaler(),
                MLPClassifier(hidden_layer_sizes=(37, 18), max_iter=300, random_state=0),
            ).fit(x, score > 0)
        if kind == "mlp-regressor":
            return MLPRegressor(hidden_layer_sizes=(21,), max_iter=300, random_state=0).fit(
                x, score
            )
        if kind == "logistic-multiclass":
            return LogisticRegression(max_iter=500).fit(x, np.digitize(score, [-1, 1]))
        return LinearRegression().fit(x, score)


KINDS = ["mlp-classifier", "mlp-regressor", "logistic-multiclass", "linear-regression"]


@pytest.fixture(scope="module", params=KINDS)
def compiled(request: pytest.FixtureRequest) -> tuple[Any, onnx.ModelProto, WasmModel]:
    model = _fit(request.param)
    options = {"zipmap": False} if hasattr(model, "predict_proba") else None
    onx = to_onnx(model, _data(1, 0), options=options)
    runtime = WasmModel.load(compile_onnx(onx, max_batch=MAX_BATCH).wasm, limits=Limits())
    return model, onx, runtime


@pytest.mark.parametrize("rows", ROWS)
def test_batches_from_a_float32_matrix_match_onnxruntime_and_sklearn(
    compiled: tuple[Any, onnx.ModelProto, WasmModel], rows: int
) -> None:
    model, onx, runtime = compiled
    x = _data(rows, rows)
    ours = np.frombuffer(runtime.predict_matrix(x), dtype=np.float32).reshape(rows, -1)
    reference = run_onnxruntime(onx, x)
    if hasattr(model, "predict_proba"):
        label, probabilities = reference
        assert np.array_equal(ours[:, 0], label.reshape(-1).astype(np.float32))
        assert np.abs(ours[:, 1:] - probabilities).max() <= 1e-5
        assert np.abs(ours[:, 1:] - model.predict_proba(x)).max() <= 1e-4
    else:
        expected = reference[0].reshape(rows, -1)
        scale = max(float(np.abs(expected).max()), 1.0)
        assert np.abs(ours - expected).max() <= 1e-5 * scale
        library = model.predict(x).reshape(rows, -1)
        assert np.abs(ours - library).max() <= 1e-4 * scale


def test_partial_tiles_give_the_bits_of_full_tiles(
    compiled: tuple[Any, onnx.ModelProto, WasmModel],
) -> None:
    """A row scored alone (the one-row function) and inside a full tile (the tile
    function) sum in the same order with the same fused multiply-adds."""
    _, _, runtime = compiled
    x = _data(3 * TILE_ROWS, 1)
    batched = runtime.predict_matrix(x)
    alone = [v for row in x for v in runtime.predict_matrix(row[None, :])]
    assert batched.tolist() == alone


def _layers(activation_reads: int) -> onnx.ModelProto:
    """X -> Gemm -> Relu -> MatMul -> Relu -> Y; with ``activation_reads`` 2 the first
    product is also concatenated to the output (so it cannot be fused away)."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(size=(6, FEATURES)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=(6,)).astype(np.float32), "B1"),
        numpy_helper.from_array(rng.normal(size=(6, 5)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["X", "W1", "B1"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["h"]),
        helper.make_node("MatMul", ["h", "W2"], ["m"]),
        helper.make_node("Relu", ["m"], ["Y"]),
    ]
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 5])
    if activation_reads == 2:
        nodes.append(helper.make_node("Concat", ["Y", "g"], ["Z"], axis=1))
        out = helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, 11])
    graph = helper.make_graph(
        nodes,
        "layers",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, FEATURES])],
        [out],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("activation_reads", "fused"), [(1, 2), (2, 1)])
def test_relu_fuses_into_the_layer_only_when_nothing_else_reads_the_product(
    activation_reads: int, fused: int
) -> None:
    model = _layers(activation_reads)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    nodes = fuse_relu(fuse_bias(list(model.graph.node), consts, outputs), {"X"}, outputs)
    assert sum(n.domain == FUSED_DOMAIN for n in nodes) == fused
    assert len(nodes) == len(model.graph.node) - fused
    runtime = WasmModel.load(compile_onnx(model, max_batch=MAX_BATCH).wasm, limits=Limits())
    x = _data(TILE_ROWS * 5 + 2, 4)
    x[0, 0] = np.nan  # NaN goes through the fused clamp as through Relu
    ours = np.frombuffer(runtime.predict_matrix(x), dtype=np.float32).reshape(len(x), -1)
    reference = np.hstack([r.reshape(len(x), -1) for r in run_onnxruntime(model, x)])
    assert np.isnan(ours[0]).any() and not np.isnan(ours[1:]).any()
    assert np.allclose(ours, reference, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_lanes_past_the_row_width_do_not_reach_a_narrow_layer() -> None:
    """Reciprocal of a 5-wide row fills the slot's padding lanes with 1/0 = infinity;
    the one-output layer after it (vectorized over inputs) masks them, where a zero
    weight would give infinity x 0 = NaN."""
    weights = np.random.default_rng(5).normal(size=(5, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reciprocal", ["X"], ["r"]),
            helper.make_node("MatMul", ["r", "W"], ["Y"]),
        ],
        "narrow",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    runtime = WasmModel.load(compile_onnx(model, max_batch=MAX_BATCH).wasm, limits=Limits())
    x = np.random.default_rng(6).uniform(1, 2, size=(TILE_ROWS + 3, 5)).astype(np.float32)
    ours = np.frombuffer(runtime.predict_matrix(x), dtype=np.float32)
    (reference,) = run_onnxruntime(model, x)
    assert np.isfinite(ours).all()
    assert np.allclose(ours, reference.reshape(-1), rtol=1e-5, atol=1e-6)
