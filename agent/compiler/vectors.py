"""Operators that act on a row as a whole: reshapes (metadata only), Concat, column
selection, ZipMap, and the row reductions Softmax, ArgMax and Normalizer.

Only axis 1 (the feature axis) is ever reduced or concatenated: an operator along the
batch axis would mix rows, which the per-row lowering cannot express, and is refused.
"""

from __future__ import annotations

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, Value, f32_literal, fail
from agent.compiler.wat import Operand, cell_loop, store_cell


def _feature_axis(node: onnx.NodeProto, value: Value, axis: int) -> None:
    if value.rank != 2 or axis not in (1, -1):
        raise fail(node.op_type, node.name, f"only axis 1 of an [N, k] row, got {axis}")


def _reshape(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    shape = state.const(node, 1)
    if shape is None:
        raise fail(node.op_type, node.name, "the target shape must be a constant")
    dims = [int(d) for d in shape.reshape(-1)]
    row = dims[1:]
    if row.count(-1) == 1:
        known = int(np.prod([d for d in row if d != -1]))
        row[row.index(-1)] = x.width // known if known and x.width % known == 0 else -1
    if (
        not dims
        or dims[0] not in (-1, 0)
        or any(d < 1 for d in row)
        or int(np.prod(row)) != x.width
    ):
        raise fail(node.op_type, node.name, f"shape {dims} does not keep one row per batch item")
    state.alias(node.output[0], x, rank=len(dims), dims=tuple(row) if len(dims) > 2 else None)


def _flatten(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    if int(attrs.get("axis", 1)) != 1:
        raise fail(node.op_type, node.name, "only axis 1 is supported")
    state.alias(node.output[0], x, rank=2)


def _axes(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> list[int]:
    axes = state.const(node, 1)
    return [int(a) for a in (axes.reshape(-1) if axes is not None else attrs.get("axes", []))]


def _squeeze(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    axes = _axes(state, node, attrs)
    if x.rank != 2 or x.width != 1 or axes not in ([1], [-1], []):
        raise fail(node.op_type, node.name, "only squeezing a width-1 feature axis is supported")
    state.alias(node.output[0], x, rank=1)


def _unsqueeze(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    if x.rank != 1 or _axes(state, node, attrs) not in ([1], [-1]):
        raise fail(node.op_type, node.name, "only adding axis 1 to an [N] value is supported")
    state.alias(node.output[0], x, rank=2)


def _concat(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    """Concatenation along any axis but the batch axis. Along the last axis of rows with
    leading axes (skl2onnx joins one-hot blocks ``[N, 1, k]`` on axis -1) each part's
    chunk for every leading index is copied in turn."""
    parts = [state.value(node, i) for i in range(len(node.input))]
    shapes = [p.row_shape() for p in parts]
    rank = parts[0].rank
    axis = int(attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if axis < 1 or axis >= rank or any(p.rank != rank for p in parts) or None in shapes:
        raise fail(node.op_type, node.name, f"axis {attrs.get('axis', 1)} would mix rows")
    known = [s for s in shapes if s is not None]
    lead, trail = known[0][: axis - 1], known[0][axis:]
    if any(s[: axis - 1] != lead or s[axis:] != trail for s in known):
        raise fail(node.op_type, node.name, "parts differ on an axis other than the joined one")
    for part in parts:
        if part.dtype is DType.string:
            raise fail(node.op_type, node.name, "string labels cannot be concatenated")
    dtype = DType.float if any(p.dtype is DType.float for p in parts) else parts[0].dtype
    row = (*lead, sum(s[axis - 1] for s in known), *trail)
    width = int(np.prod(row))
    out = state.new_value(node.output[0], width, rank, dtype, dims=row if rank > 2 else None)
    body, offset = [], 0
    for i in range(int(np.prod(lead))):
        for part in parts:
            chunk = part.width // int(np.prod(lead))
            body.append(
                f"(memory.copy (i32.const {out.cell(offset)}) "
                f"(i32.const {part.cell(i * chunk)}) (i32.const {chunk * CELL}))"
            )
            offset += chunk
    state.add_kernel(node, "\n".join(body))


def _array_feature_extractor(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    table = state.const(node, 0)
    if table is not None:
        # A constant list indexed by a row value: a classifier mapping an index to its label.
        index = state.value(node, 1)
        if index.width != 1 or index.dtype is not DType.int:
            raise fail(node.op_type, node.name, "a constant table must be indexed by one integer")
        if table.dtype.kind == "f":
            _lookup(state, node, table.reshape(-1), index)
            return
        classes = tuple(_label_text(v) for v in table.reshape(-1))
        dtype = DType.string if table.dtype.kind in "OSU" else DType.int
        state.alias(node.output[0], index, dtype=dtype, classes=classes, rank=2)
        return
    x = state.value(node, 0)
    indices = state.const(node, 1)
    if indices is None or x.rank != 2:
        raise fail(node.op_type, node.name, "column indices must be constant, on an [N, k] row")
    columns = [int(i) for i in indices.reshape(-1)]
    if any(not 0 <= c < x.width for c in columns):
        raise fail(node.op_type, node.name, "a column index is out of range")
    out = state.new_value(node.output[0], len(columns), 2, x.dtype, x.classes)
    body = "\n".join(
        f"(f32.store (i32.const {out.cell(j)}) (f32.load (i32.const {x.cell(c)})))"
        for j, c in enumerate(columns)
    )
    state.add_kernel(node, body)


def _lookup(state: Lowering, node: onnx.NodeProto, table: np.ndarray, index: Value) -> None:
    """A float table indexed by a row value (isotonic calibration: the y of the nearest
    x); an index outside the table gives NaN rather than a neighbouring cell."""
    addr = state.program.add_f32(table.astype(np.float32))
    out = state.new_value(node.output[0], 1, 2)
    body = f"""(local.set $k (i32.trunc_sat_f32_u (f32.load (i32.const {index.addr}))))
(f32.store (i32.const {out.addr}) (select
  (f32.load offset={addr} (i32.shl (local.get $k) (i32.const 2)))
  (f32.const nan)
  (i32.lt_u (local.get $k) (i32.const {table.size}))))"""
    state.add_kernel(node, body, "(local $k i32)")


def _gather(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    """Gather along axis 1 with constant indices: a column selection."""
    x = state.value(node, 0)
    indices = state.const(node, 1)
    if int(attrs.get("axis", 0)) not in (1, -1) or x.rank != 2 or indices is None:
        raise fail(node.op_type, node.name, "only constant indices along axis 1 are supported")
    if indices.ndim > 1:
        raise fail(node.op_type, node.name, "indices must be a scalar or a vector")
    columns = [int(i) + (x.width if int(i) < 0 else 0) for i in indices.reshape(-1)]
    if any(not 0 <= c < x.width for c in columns):
        raise fail(node.op_type, node.name, "a column index is out of range")
    out = state.new_value(node.output[0], len(columns), 1 + indices.ndim, x.dtype, x.classes)
    body = "\n".join(
        f"(f32.store (i32.const {out.cell(j)}) (f32.load (i32.const {x.cell(c)})))"
        for j, c in enumerate(columns)
    )
    state.add_kernel(node, body)


def _label_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _zipmap(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    labels = attrs.get("classlabels_strings") or attrs.get("classlabels_int64s") or []
    classes = tuple(_label_text(v) for v in labels)
    if len(classes) != x.width:
        raise fail(node.op_type, node.name, "class count differs from the probability width")
    state.alias(node.output[0], x, classes=classes)


def _softmax(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    _feature_axis(node, x, int(attrs.get("axis", -1)))
    state.program.helpers.add("exp")
    out = state.new_value(node.output[0], x.width, 2)
    state.add_kernel(node, softmax_body(x.addr, out.addr, x.width), SOFTMAX_LOCALS)


SOFTMAX_LOCALS = "(local $o i32) (local $m f32) (local $s f64)"


def softmax_body(src: int, dst: int, width: int) -> str:
    """Numerically stable softmax of ``width`` f32 cells at ``src`` into ``dst`` (f64 math)."""
    cell = Operand(src, CELL).load()
    return (
        f"(local.set $m (f32.load (i32.const {src})))\n"
        + cell_loop(width, f"(local.set $m (f32.max (local.get $m) {cell}))")
        + "(local.set $s (f64.const 0))\n"
        + cell_loop(
            width,
            f"(f32.store offset={dst} (local.get $o) (f32.demote_f64 (call $exp "
            f"(f64.promote_f32 (f32.sub {cell} (local.get $m))))))\n"
            f"(local.set $s (f64.add (local.get $s) (f64.promote_f32 "
            f"(f32.load offset={dst} (local.get $o)))))",
        )
        + cell_loop(
            width,
            store_cell(
                dst,
                f"(f32.demote_f64 (f64.div (f64.promote_f32 "
                f"(f32.load offset={dst} (local.get $o))) (local.get $s)))",
            ),
        )
    )


def argmax_body(src: int, width: int, dst: int, last: bool = False, minimum: bool = False) -> str:
    """Index (as f32) of the first (or last) maximum (or ``minimum``) of ``width`` cells
    into cell ``dst``."""
    better = ("f32.le" if last else "f32.lt") if minimum else ("f32.ge" if last else "f32.gt")
    return (
        f"(local.set $m (f32.load (i32.const {src})))\n(local.set $k (i32.const 0))\n"
        + cell_loop(
            width,
            f"(if ({better} (f32.load offset={src} (local.get $o)) (local.get $m)) (then\n"
            f"(local.set $m (f32.load offset={src} (local.get $o)))\n"
            f"(local.set $k (i32.shr_u (local.get $o) (i32.const 2)))))",
        )
        + f"(f32.store (i32.const {dst}) (f32.convert_i32_u (local.get $k)))\n"
    )


ARGMAX_LOCALS = "(local $o i32) (local $m f32) (local $k i32)"


def _arg_extreme(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    """ArgMax and ArgMin along the feature axis."""
    x = state.value(node, 0)
    _feature_axis(node, x, int(attrs.get("axis", 0)))
    rank = 2 if int(attrs.get("keepdims", 1)) else 1
    out = state.new_value(node.output[0], 1, rank, DType.int)
    last = bool(attrs.get("select_last_index", 0))
    body = argmax_body(x.addr, x.width, out.addr, last, node.op_type == "ArgMin")
    state.add_kernel(node, body, ARGMAX_LOCALS)


def _reduce(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    """ReduceSum / ReduceMean / ReduceMax / ReduceMin over the feature axis of a row, in
    f32 from the first cell to the last."""
    x = state.value(node, 0)
    axes = _axes(state, node, attrs)
    if not axes and int(attrs.get("noop_with_empty_axes", 0)):
        state.alias(node.output[0], x)
        return
    _feature_axis(node, x, axes[0] if len(axes) == 1 else 0)
    keep = int(attrs.get("keepdims", 1))
    out = state.new_value(node.output[0], 1, 2 if keep else 1, x.dtype)
    op = {"ReduceSum": "add", "ReduceMean": "add", "ReduceMax": "max", "ReduceMin": "min"}[
        node.op_type
    ]
    cell = Operand(x.addr, CELL).load()
    start = "(f32.const 0)" if op == "add" else f"(f32.load (i32.const {x.addr}))"
    total = "(local.get $n)"
    if node.op_type == "ReduceMean":
        total = f"(f32.div {total} (f32.const {f32_literal(float(x.width))}))"
    body = (
        f"(local.set $n {start})\n"
        + cell_loop(x.width, f"(local.set $n (f32.{op} (local.get $n) {cell}))")
        + f"(f32.store (i32.const {out.addr}) {total})\n"
    )
    state.add_kernel(node, body, "(local $o i32) (local $n f32)")


def _normalizer(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    norm = str(attrs.get("norm", "MAX"))
    cell = Operand(x.addr, CELL).load()
    if norm == "MAX":
        start, step = f"(f32.load (i32.const {x.addr}))", f"(f32.max (local.get $n) {cell})"
    elif norm == "L1":
        start, step = "(f32.const 0)", f"(f32.add (local.get $n) (f32.abs {cell}))"
    elif norm == "L2":
        start, step = "(f32.const 0)", f"(f32.add (local.get $n) (f32.mul {cell} {cell}))"
    else:
        raise fail(node.op_type, node.name, f"norm {norm!r}")
    out = state.new_value(node.output[0], x.width, x.rank)
    divisor = "(f32.sqrt (local.get $n))" if norm == "L2" else "(local.get $n)"
    body = (
        f"(local.set $n {start})\n"
        + cell_loop(x.width, f"(local.set $n {step})")
        + cell_loop(
            x.width,
            store_cell(
                out.addr,
                f"(select {cell} (f32.div {cell} {divisor}) "
                f"(f32.eq (local.get $n) (f32.const {f32_literal(0.0)})))",
            ),
        )
    )
    state.add_kernel(node, body, "(local $o i32) (local $n f32)")


LOWERINGS: dict[tuple[str, str], LowerFn] = {
    ("", "Reshape"): _reshape,
    ("", "Flatten"): _flatten,
    ("", "Squeeze"): _squeeze,
    ("", "Unsqueeze"): _unsqueeze,
    ("", "Concat"): _concat,
    ("", "Softmax"): _softmax,
    ("", "ArgMax"): _arg_extreme,
    ("", "ArgMin"): _arg_extreme,
    ("", "ReduceSum"): _reduce,
    ("", "ReduceMean"): _reduce,
    ("", "ReduceMax"): _reduce,
    ("", "ReduceMin"): _reduce,
    ("", "Gather"): _gather,
    (ML_DOMAIN, "ArrayFeatureExtractor"): _array_feature_extractor,
    (ML_DOMAIN, "ZipMap"): _zipmap,
    (ML_DOMAIN, "Normalizer"): _normalizer,
}
