"""Batched dense layers (tile kernels): values that live across a tile kernel, partial
tiles and full tiles agree with onnxruntime and with each other bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.compiler.build import compile_onnx
from agent.compiler.graph import fuse_bias
from agent.compiler.ir import TILE_ROWS
from agent.limits import Limits
from agent.runtime.model import WasmModel
from tests.compiler.compiler_helpers import run_compiled, run_onnxruntime

WIDTH = 6


def _skip_connection_model() -> onnx.ModelProto:
    """s = 0.5 X; d1 = s W1 (tile 0); r = Relu(d1 + s) (s restored after tile 0);
    d2 = r W2 + b (tile 1); Y = Concat(d2, s, d1) (s and d1 restored after tile 1)."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(np.float32([0.5]), "half"),
        numpy_helper.from_array(rng.normal(size=(WIDTH, WIDTH)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=(WIDTH, 3)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Mul", ["X", "half"], ["s"]),
        helper.make_node("MatMul", ["s", "W1"], ["d1"]),
        helper.make_node("Add", ["d1", "s"], ["skip"]),
        helper.make_node("Relu", ["skip"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "b"], ["d2"]),
        helper.make_node("Concat", ["d2", "s", "d1"], ["Y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "skip",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 3 + 2 * WIDTH])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODEL = _skip_connection_model()


@pytest.fixture(scope="module")
def runtime() -> WasmModel:
    return WasmModel.load(compile_onnx(MODEL, max_batch=64).wasm, limits=Limits())


@pytest.mark.parametrize("rows", [1, 2, TILE_ROWS - 1, TILE_ROWS, TILE_ROWS + 1, 9, 64, 150])
def test_values_live_across_tile_kernels_match_onnxruntime(runtime: WasmModel, rows: int) -> None:
    x = np.random.default_rng(rows).normal(size=(rows, WIDTH)).astype(np.float32)
    ours = np.asarray(runtime.predict(x.tolist()), dtype=np.float64)
    (reference,) = run_onnxruntime(MODEL, x)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-5 * max(float(np.abs(reference).max()), 1.0)


def test_full_tiles_and_single_rows_give_identical_bits(runtime: WasmModel) -> None:
    """The tile function and the one-row function sum in the same order."""
    x = np.random.default_rng(0).normal(size=(3 * TILE_ROWS, WIDTH)).astype(np.float32)
    batched = runtime.predict(x.tolist())
    one_by_one = [runtime.predict([row])[0] for row in x.tolist()]
    assert batched == one_by_one


def _dense_then_add(bias_shape: tuple[int, ...], extra_use: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(size=(WIDTH, 5)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=bias_shape).astype(np.float32), "B"),
    ]
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["m"]),
        helper.make_node("Add", ["B", "m"], ["a"]),
    ]
    out = "a"
    if extra_use:  # the product is read twice: it must stay its own value
        nodes.append(helper.make_node("Mul", ["m", "a"], ["y"]))
        out = "y"
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, 5])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("bias_shape", "extra_use", "fused"),
    [((5,), False, True), ((1, 5), False, True), ((1,), False, False), ((5,), True, False)],
)
def test_matmul_add_becomes_one_gemm_only_when_nothing_else_reads_the_product(
    bias_shape: tuple[int, ...], extra_use: bool, fused: bool
) -> None:
    model = _dense_then_add(bias_shape, extra_use)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = fuse_bias(list(model.graph.node), consts, {o.name for o in model.graph.output})
    assert [n.op_type for n in nodes][:1] == (["Gemm"] if fused else ["MatMul"])
    x = np.random.default_rng(2).normal(size=(7, WIDTH)).astype(np.float32)
    ours, _ = run_compiled(model, x)
    (reference,) = run_onnxruntime(model, x)
    assert np.abs(ours - reference).max() <= 1e-5 * max(float(np.abs(reference).max()), 1.0)
