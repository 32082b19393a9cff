"""Dense linear algebra on a row: MatMul and Gemm against constant weights, and the
ai.onnx.ml LinearRegressor and LinearClassifier.

Weights are stored output-major in a data segment and each output is one dot product,
accumulated in f64 and rounded to f32 once (ONNX Runtime accumulates in f32, so results
agree to f32 rounding of a sum, well inside the parity tolerance).
"""

from __future__ import annotations

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, Value, fail
from agent.compiler.scores import TRANSFORMS, class_labels, transform_kernel
from agent.compiler.vectors import ARGMAX_LOCALS, argmax_body

DENSE_LOCALS = "(local $j i32) (local $i i32) (local $w i32) (local $acc f64)"


def dense_kernel(
    state: Lowering, node: onnx.NodeProto, x: Value, weights: np.ndarray, bias: np.ndarray | None
) -> Value:
    """out[j] = bias[j] + sum_i x[i] * weights[j, i]; ``weights`` is [outputs, inputs]."""
    n_out, n_in = weights.shape
    if n_in != x.width:
        raise fail(node.op_type, node.name, f"weights expect {n_in} inputs, the row has {x.width}")
    w_addr = state.program.add_f32(weights.astype(np.float32).reshape(-1))
    start = "(f64.const 0)"
    if bias is not None:
        b_addr = state.program.add_f32(np.broadcast_to(bias.astype(np.float32), (n_out,)).copy())
        start = f"(f64.promote_f32 (f32.load offset={b_addr} (local.get $j)))"
    out = state.new_value(node.output[0], n_out, 2)
    body = f"""(local.set $w (i32.const {w_addr}))
(local.set $j (i32.const 0))
(loop $outs
  (local.set $acc {start})
  (local.set $i (i32.const 0))
  (loop $ins
    (local.set $acc (f64.add (local.get $acc) (f64.mul
      (f64.promote_f32 (f32.load offset={x.addr} (local.get $i)))
      (f64.promote_f32 (f32.load (local.get $w))))))
    (local.set $w (i32.add (local.get $w) (i32.const {CELL})))
    (local.set $i (i32.add (local.get $i) (i32.const {CELL})))
    (br_if $ins (i32.lt_u (local.get $i) (i32.const {n_in * CELL}))))
  (f32.store offset={out.addr} (local.get $j) (f32.demote_f64 (local.get $acc)))
  (local.set $j (i32.add (local.get $j) (i32.const {CELL})))
  (br_if $outs (i32.lt_u (local.get $j) (i32.const {n_out * CELL}))))
"""
    state.add_kernel(node, body, DENSE_LOCALS)
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
