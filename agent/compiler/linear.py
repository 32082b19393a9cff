"""Dense linear algebra on a row: MatMul and Gemm against constant weights, and the
ai.onnx.ml LinearRegressor and LinearClassifier.

Products are accumulated in f32 with 128-bit SIMD fused multiply-adds, register-blocked
over outputs and rows, as ONNX Runtime's own GEMM does in f32 (the summation order
differs, so results agree to f32 rounding, well inside the parity tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from agent.compiler.graph import FUSED_DOMAIN, ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, TILE_ROWS, DType, Value, fail
from agent.compiler.scores import TRANSFORMS, class_labels, transform_kernel
from agent.compiler.vectors import ARGMAX_LOCALS, argmax_body
from agent.compiler.wat import VECTOR

_LANES = 4
# f32x4 accumulators per block of outputs and input cells per loop step, for the tile
# function and the one-row function: chosen by measurement (bench/runtime_bench.py) on
# wasmtime's x86-64 code, which has 16 vector registers and loads every operand of a
# step before its first multiply-add, so a wider step spills.
_TILE_VECTORS, _TILE_UNROLL = 3, 2
_ROW_VECTORS, _ROW_UNROLL = 8, 1


def dense_kernel(
    state: Lowering,
    node: onnx.NodeProto,
    x: Value,
    weights: np.ndarray,
    bias: np.ndarray | None,
    relu: bool = False,
) -> Value:
    """out[j] = bias[j] + sum_i x[i] * weights[j, i]; ``weights`` is [outputs, inputs];
    with ``relu``, max(out[j], 0) (a fused activation, see ``graph.fuse_relu``).

    A tile kernel (see ``ir.Kernel``): ``name`` scores ``TILE_ROWS`` rows at once and
    ``name_row`` one row (a batch's last, partial tile), with the same fused multiply-adds
    in the same order, so both give the same bits. Four outputs or more are vectorized
    over outputs (``_function``); fewer, as a linear model's score or an MLP's last
    layer, over inputs (``_dot_function``), where a vector of outputs would waste lanes.
    """
    n_out, n_in = weights.shape
    if n_in != x.width:
        raise fail(node.op_type, node.name, f"weights expect {n_in} inputs, the row has {x.width}")
    out = state.new_value(node.output[0], n_out, 2)
    name = state.kernel_name(node)
    start = np.zeros(n_out, dtype=np.float32)
    if bias is not None:
        start[:] = np.broadcast_to(bias.astype(np.float32), (n_out,))
    if n_out < _LANES:
        dot = _DotLayout(
            bias=state.program.add_f32(start),
            table=state.program.add_f32(_chunked(weights)),
            n_in=n_in,
            n_out=n_out,
            relu=relu,
        )
        source = _dot_function(name, dot, TILE_ROWS) + _dot_function(f"{name}_row", dot, 1)
    else:
        padded = -(-n_out // _LANES) * _LANES
        table = np.zeros((n_in, padded), dtype=np.float32)
        table[:, :n_out] = weights.T
        layout = _Layout(
            bias=state.program.add_f32(np.pad(start, (0, padded - n_out))),
            table=state.program.add_f32(table.reshape(-1)),
            n_in=n_in,
            padded=padded,
            in_stride=16 * -(-n_in // _LANES),
            relu=relu,
        )
        source = _function(name, layout, TILE_ROWS, _TILE_VECTORS, _TILE_UNROLL) + _function(
            f"{name}_row", layout, 1, _ROW_VECTORS, _ROW_UNROLL
        )
    state.program.add_tile_kernel(name, source, x, out)
    return out


def _chunked(weights: np.ndarray) -> np.ndarray:
    """[outputs, inputs] -> [input chunks, outputs, 4]: the four weights of each output
    for each group of four inputs side by side, the last group padded with zeros."""
    n_out, n_in = weights.shape
    chunks = -(-n_in // _LANES)
    padded = np.zeros((n_out, chunks * _LANES), dtype=np.float32)
    padded[:, :n_in] = weights
    return padded.reshape(n_out, chunks, _LANES).transpose(1, 0, 2).reshape(-1)


@dataclass(frozen=True)
class _DotLayout:
    bias: int  # address of the n_out biases
    table: int  # address of the [chunks, n_out, 4] weight table (``_chunked``)
    n_in: int
    n_out: int  # fewer than four
    relu: bool


def _dot_function(name: str, layout: _DotLayout, rows: int) -> str:
    """``(func name (param $in i32) (param $out i32))`` for fewer than four outputs: each
    row's inputs, four at a time, multiply-add into one f32x4 accumulator per output, whose
    lanes are summed ((0 + 1) + (2 + 3)) and the bias added. A last group of fewer than
    four inputs is masked: the lanes past the row's width hold whatever the buffer row's
    padding holds (possibly NaN), which a zero weight would not cancel."""
    in_stride = 16 * -(-layout.n_in // _LANES)
    full, tail = divmod(layout.n_in, _LANES)
    accs = [[f"$a{t}_{j}" for j in range(layout.n_out)] for t in range(rows)]

    def step(mask: str | None) -> str:
        lines = [
            f"(local.set $w{j} (v128.load offset={16 * j} (local.get $w)))"
            for j in range(layout.n_out)
        ]
        for t, row in enumerate(accs):
            x = f"(v128.load offset={t * in_stride} (local.get $p))"
            lines.append(f"(local.set $x {x if mask is None else f'(v128.and {x} {mask})'})")
            lines += [
                f"(local.set {acc} (f32x4.relaxed_madd (local.get $x) (local.get $w{j}) "
                f"(local.get {acc})))"
                for j, acc in enumerate(row)
            ]
        lines.append(f"(local.set $w (i32.add (local.get $w) (i32.const {16 * layout.n_out})))")
        lines.append("(local.set $p (i32.add (local.get $p) (i32.const 16)))")
        return "\n    ".join(lines)

    body = [
        f"(local.set $w (i32.const {layout.table}))",
        "(local.set $p (local.get $in))",
    ]
    if full:
        body.append(
            f"(local.set $end (i32.add (local.get $in) (i32.const {16 * full})))\n"
            f"(loop $ins\n    {step(None)}\n"
            "    (br_if $ins (i32.lt_u (local.get $p) (local.get $end))))"
        )
    if tail:
        lanes = " ".join("-1" if k < tail else "0" for k in range(_LANES))
        body.append(step(f"(v128.const i32x4 {lanes})"))
    for t, row in enumerate(accs):
        for j, acc in enumerate(row):
            lane = [f"(f32x4.extract_lane {k} (local.get {acc}))" for k in range(_LANES)]
            total = (
                f"(f32.add (f32.add (f32.add {lane[0]} {lane[1]}) (f32.add {lane[2]} {lane[3]})) "
                f"(f32.load (i32.const {layout.bias + CELL * j})))"
            )
            if layout.relu:
                total = f"(f32.max {total} (f32.const 0))"
            body.append(f"(f32.store offset={16 * t + CELL * j} (local.get $out) {total})")
    locals_ = " ".join(
        ["(local $w i32) (local $p i32) (local $end i32) (local $x v128)"]
        + [f"(local $w{j} v128)" for j in range(layout.n_out)]
        + [f"(local {acc} v128)" for row in accs for acc in row]
    )
    text = "\n".join(body)
    return f"(func {name} (param $in i32) (param $out i32) {locals_}\n{text})\n"


@dataclass(frozen=True)
class _Layout:
    bias: int  # address of the padded bias vector
    table: int  # address of the [n_in, padded] weight table
    n_in: int
    padded: int  # outputs rounded up to whole vectors
    in_stride: int  # bytes between input rows in a tile buffer
    relu: bool  # clamp at 0 as the accumulators are stored


def _function(name: str, layout: _Layout, rows: int, vectors: int, unroll: int) -> str:
    """``(func name (param $in i32) (param $out i32))``: ``rows`` rows of the input buffer
    at ``$in`` -> ``rows`` rows of the output buffer at ``$out``, outputs in blocks of
    ``vectors`` vectors, ``unroll`` input cells per loop step when it divides the inputs
    (else one). Each accumulator takes ``f32x4.relaxed_madd``, a fused multiply-add under
    the engine's deterministic relaxed SIMD (``runtime.engine``): one rounding per
    input, in input order, whatever the blocking, so both functions agree bit for bit."""
    out_stride = CELL * layout.padded
    blocks = []
    for first in range(0, layout.padded, vectors * _LANES):
        count = min(vectors, (layout.padded - first) // _LANES)
        accs = [[f"$a{t}_{k}" for k in range(count)] for t in range(rows)]
        init = "\n".join(
            f"(local.set {acc} (v128.load (i32.const {layout.bias + CELL * first + 16 * k})))"
            for row in accs
            for k, acc in enumerate(row)
        )
        step = unroll if layout.n_in % unroll == 0 else 1
        steps = []
        for u in range(step):
            steps += [
                f"(local.set $w{k} (v128.load offset={u * out_stride + 16 * k} (local.get $w)))"
                for k in range(count)
            ]
            for t, row in enumerate(accs):
                steps.append(
                    f"(local.set $x (f32x4.splat (f32.load offset="
                    f"{t * layout.in_stride + CELL * u} (local.get $p))))"
                )
                steps += [
                    f"(local.set {acc} (f32x4.relaxed_madd (local.get $x) (local.get $w{k}) "
                    f"(local.get {acc})))"
                    for k, acc in enumerate(row)
                ]
        madds = "\n    ".join(steps)
        stores = "\n".join(
            f"(v128.store offset={t * out_stride + CELL * first + 16 * k} (local.get $out) "
            f"{_activated(f'(local.get {acc})', layout.relu)})"
            for t, row in enumerate(accs)
            for k, acc in enumerate(row)
        )
        blocks.append(f"""{init}
(local.set $w (i32.const {layout.table + CELL * first}))
(local.set $p (local.get $in))
(loop $ins
    {madds}
    (local.set $w (i32.add (local.get $w) (i32.const {step * out_stride})))
    (local.set $p (i32.add (local.get $p) (i32.const {step * CELL})))
    (br_if $ins (i32.lt_u (local.get $p) (local.get $end))))
{stores}""")
    width = min(vectors, layout.padded // _LANES)
    locals_ = " ".join(
        ["(local $w i32) (local $p i32) (local $end i32)"]
        + ["(local $x v128)"]
        + [f"(local $w{k} v128)" for k in range(width)]
        + [f"(local $a{t}_{k} v128)" for t in range(rows) for k in range(width)]
    )
    body = "\n".join(blocks)
    return f"""(func {name} (param $in i32) (param $out i32) {locals_}
(local.set $end (i32.add (local.get $in) (i32.const {CELL * layout.n_in})))
{body})
"""


def _activated(acc: str, relu: bool) -> str:
    return f"(f32x4.max {acc} {VECTOR.const(0.0)})" if relu else acc


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
    dense_kernel(state, node, x, weights.T, None, _fused_relu(node, attrs))


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
    dense_kernel(state, node, x, weights, bias, _fused_relu(node, attrs))


def _fused_relu(node: onnx.NodeProto, attrs: Attrs) -> bool:
    """Whether ``node`` is a layer ``graph.fuse_relu`` fused with its Relu."""
    activation = attrs.get("activation")
    if node.domain == FUSED_DOMAIN and activation not in ("Relu", None):
        raise fail(node.op_type, node.name, f"fused activation {activation!r}")
    return node.domain == FUSED_DOMAIN and activation == "Relu"


def _linear_weights(node: onnx.NodeProto, attrs: Attrs, n_in: int) -> tuple[np.ndarray, np.ndarray]:
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
    label = state.new_value(node.output[0], 1, 1, DType.string if strings else DType.int, classes)
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
    (FUSED_DOMAIN, "MatMul"): _matmul,
    (FUSED_DOMAIN, "Gemm"): _gemm,
    (ML_DOMAIN, "LinearRegressor"): _linear_regressor,
    (ML_DOMAIN, "LinearClassifier"): _linear_classifier,
}
