"""Dense linear algebra on a row: MatMul and Gemm against constant weights, and the
ai.onnx.ml LinearRegressor and LinearClassifier.

Products are accumulated in f32 with 128-bit SIMD, register-blocked over outputs, as
ONNX Runtime's own GEMM does in f32 (the summation order differs, so results agree to f32
rounding, well inside the parity tolerance).
"""

from __future__ import annotations

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, Value, fail
from agent.compiler.scores import TRANSFORMS, class_labels, transform_kernel
from agent.compiler.vectors import ARGMAX_LOCALS, argmax_body

_LANES = 4
_BLOCK_VECTORS = 8  # f32x4 accumulators held in locals per block of outputs


def dense_kernel(
    state: Lowering, node: onnx.NodeProto, x: Value, weights: np.ndarray, bias: np.ndarray | None
) -> Value:
    """out[j] = bias[j] + sum_i x[i] * weights[j, i]; ``weights`` is [outputs, inputs].

    Register-blocked f32x4 SIMD: outputs are processed in blocks of up to 32 (8 vectors
    kept in locals); for each input cell, splatted, every accumulator of the block takes
    one multiply-add. Weights are stored per block, input-major, the output axis padded to
    a multiple of 4 with zeros; the padding cells of the output slot (slots are 16-byte
    aligned and sized) receive zeros and are never read as outputs.
    """
    n_out, n_in = weights.shape
    if n_in != x.width:
        raise fail(node.op_type, node.name, f"weights expect {n_in} inputs, the row has {x.width}")
    padded = -(-n_out // _LANES) * _LANES
    table = np.zeros((n_in, padded), dtype=np.float32)
    table[:, :n_out] = weights.T
    start = np.zeros(padded, dtype=np.float32)
    if bias is not None:
        start[:n_out] = np.broadcast_to(bias.astype(np.float32), (n_out,))
    b_addr = state.program.add_f32(start)
    out = state.new_value(node.output[0], n_out, 2)
    width = _BLOCK_VECTORS * _LANES
    blocks = []
    for first in range(0, padded, width):
        block = table[:, first : first + width]
        vectors = block.shape[1] // _LANES
        w_addr = state.program.add_f32(np.ascontiguousarray(block).reshape(-1))
        accs = [f"$a{k}" for k in range(vectors)]
        init = "\n".join(
            f"(local.set {a} (v128.load (i32.const {b_addr + CELL * first + 16 * k})))"
            for k, a in enumerate(accs)
        )
        madds = "\n    ".join(
            f"(local.set {a} (f32x4.add (local.get {a}) (f32x4.mul (local.get $x) "
            f"(v128.load offset={16 * k} (local.get $w)))))"
            for k, a in enumerate(accs)
        )
        stores = "\n".join(
            f"(v128.store (i32.const {out.addr + CELL * first + 16 * k}) (local.get {a}))"
            for k, a in enumerate(accs)
        )
        blocks.append(f"""{init}
(local.set $w (i32.const {w_addr}))
(local.set $i (i32.const 0))
(loop $ins
    (local.set $x (f32x4.splat (f32.load offset={x.addr} (local.get $i))))
    {madds}
    (local.set $w (i32.add (local.get $w) (i32.const {16 * vectors})))
    (local.set $i (i32.add (local.get $i) (i32.const {CELL})))
    (br_if $ins (i32.lt_u (local.get $i) (i32.const {n_in * CELL}))))
{stores}""")
    locals_ = "(local $i i32) (local $w i32) (local $x v128) " + " ".join(
        f"(local $a{k} v128)" for k in range(min(_BLOCK_VECTORS, padded // _LANES))
    )
    state.add_kernel(node, "\n".join(blocks), locals_)
    return out


def _row_input(state: Lowering, node: onnx.NodeProto) -> Value:
    x = state.value(node, 0)
    if x.rank != 2 or x.dtype is DType.string:
        raise fail(node.op_type, node.name, "input must be a numeric [N, k] row")
    return x


def _matmul(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = _row_input(state, node)
    weights = state.const(node, 1)
    if weights is None or weights.ndim != 2:
        raise fail(node.op_type, node.name, "the right operand must be a constant matrix")
    dense_kernel(state, node, x, weights.T, None)


def _gemm(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    if int(attrs.get("transA", 0)):
        raise fail(node.op_type, node.name, "transA=1 would mix rows")
    x = _row_input(state, node)
    b = state.const(node, 1)
    if b is None or b.ndim != 2:
        raise fail(node.op_type, node.name, "B must be a constant matrix")
    weights = (b if int(attrs.get("transB", 0)) else b.T) * float(attrs.get("alpha", 1.0))
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = state.const(node, 2)
        if c is None or c.size not in (1, weights.shape[0]) or c.ndim > 2:
            raise fail(node.op_type, node.name, "C must be a constant broadcastable to one row")
        bias = c.reshape(-1) * float(attrs.get("beta", 1.0))
    dense_kernel(state, node, x, weights, bias)


def _linear_weights(
    node: onnx.NodeProto, attrs: Attrs, n_in: int
) -> tuple[np.ndarray, np.ndarray]:
    coefficients = np.asarray(attrs.get("coefficients", []), dtype=np.float64)
    if coefficients.size == 0 or coefficients.size % n_in:
        raise fail(node.op_type, node.name, "coefficients do not match the input width")
    weights = coefficients.reshape(-1, n_in)
    intercepts = np.asarray(attrs.get("intercepts", []) or [0.0] * weights.shape[0], np.float64)
    if intercepts.size != weights.shape[0]:
        raise fail(node.op_type, node.name, "intercepts do not match the coefficients")
    return weights, intercepts


def _linear_regressor(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = _row_input(state, node)
    if str(attrs.get("post_transform", "NONE")) != "NONE":
        raise fail(node.op_type, node.name, "only post_transform NONE is supported")
    weights, intercepts = _linear_weights(node, attrs, x.width)
    dense_kernel(state, node, x, weights, intercepts)


def _linear_classifier(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = _row_input(state, node)
    classes, strings = class_labels(node, dict(attrs))
    post = str(attrs.get("post_transform", "NONE"))
    if post not in TRANSFORMS:
        raise fail(node.op_type, node.name, f"post_transform {post} is not supported")
    weights, intercepts = _linear_weights(node, attrs, x.width)
    if weights.shape[0] != len(classes):
        raise fail(node.op_type, node.name, "one score per class is required")
    raw = _scores_node(node)
    scores = dense_kernel(state, raw, x, weights, intercepts)
    label = state.new_value(
        node.output[0], 1, 1, DType.string if strings else DType.int, classes
    )
    state.add_kernel(node, argmax_body(scores.addr, scores.width, label.addr), ARGMAX_LOCALS)
    probabilities = state.new_value(node.output[1], len(classes), 2, DType.float, classes)
    transform_kernel(state, node, post, scores.addr, probabilities.addr, len(classes))


def _scores_node(node: onnx.NodeProto) -> onnx.NodeProto:
    """A stand-in node whose only output is a private name for the raw scores."""
    raw = onnx.NodeProto()
    raw.CopyFrom(node)
    del raw.output[:]
    raw.output.append(f"{node.output[0]}::scores")
    return raw




LOWERINGS: dict[tuple[str, str], LowerFn] = {
    ("", "MatMul"): _matmul,
    ("", "Gemm"): _gemm,
    (ML_DOMAIN, "LinearRegressor"): _linear_regressor,
    (ML_DOMAIN, "LinearClassifier"): _linear_classifier,
}
