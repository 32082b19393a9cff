"""Cell-by-cell operators: unary math, broadcasting binary arithmetic and comparisons,
Where, Clip, casts, and the ai.onnx.ml preprocessors that act per cell (Scaler,
Binarizer, Imputer).

Broadcasting supported: a row value ``[N, k]`` with another of the same width or width 1,
and with constants of shape ``[]``, ``[1]``, ``[k]`` or ``[1, k]``. Anything else (a
constant that would add an axis, ``[N]`` against ``[N, k]``) raises ``CompileError``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, Value, f32_literal, fail
from agent.compiler.wat import Operand, bool_to_f32, cell_loop, store_cell, via_f64

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
_INT_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32,
    onnx.TensorProto.INT64, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
    onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
}


def _broadcast(state: Lowering, node: onnx.NodeProto) -> tuple[list[Operand], int, int, DType]:
    """Operands of every input, and the output's width, rank and dtype."""
    rows = [state.values[n] for n in node.input if n in state.values]
    for value in rows:
        if value.classes is not None and value.dtype is DType.string:
            raise fail(node.op_type, node.name, "string class labels cannot be computed on")
    rank = max(v.rank for v in rows)
    if any(v.rank != rank for v in rows) and any(v.rank == 1 for v in rows):
        raise fail(node.op_type, node.name, "broadcasting [N] against [N, k] is not supported")
    width = max(v.width for v in rows)
    consts = [state.consts[n] for n in node.input if n in state.consts]
    for const in consts:
        squeezed = const.reshape(-1) if const.size else const
        if const.ndim > rank or (const.ndim == 2 and const.shape[0] != 1):
            raise fail(node.op_type, node.name, f"constant of shape {const.shape} adds an axis")
        if const.size not in (1, width):
            if width == 1 and rank == 2 and const.ndim >= 1:
                width = int(squeezed.size)
            else:
                raise fail(node.op_type, node.name, f"constant of shape {const.shape} does not fit")
    operands: list[Operand] = []
    for name in node.input:
        if name in state.values:
            value = state.values[name]
            if value.width not in (1, width):
                raise fail(node.op_type, node.name, "row widths do not broadcast")
            operands.append(Operand(value.addr, CELL if value.width == width and width > 1 else 0))
        elif name in state.consts:
            const = state.consts[name].astype(np.float32).reshape(-1)
            if const.size == 1:
                operands.append(Operand(immediate=float(const[0])))
            else:
                operands.append(Operand(state.program.add_f32(const), CELL))
        else:
            raise fail(node.op_type, node.name, "missing input")
    dtypes = {v.dtype for v in rows} | {
        DType.float if np.issubdtype(c.dtype, np.floating) else DType.int for c in consts
    }
    dtype = next((d for d in (DType.float, DType.int) if d in dtypes), DType.bool)
    return operands, width, rank, dtype


def _emit(state: Lowering, node: onnx.NodeProto, out: Value, expr: str) -> None:
    state.add_kernel(node, cell_loop(out.width, store_cell(out.addr, expr)), "(local $o i32)")


def _unary(make: Callable[[str], str], helpers: tuple[str, ...] = ()) -> LowerFn:
    def lower(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
        x = state.value(node, 0)
        if x.dtype is DType.string:
            raise fail(node.op_type, node.name, "string class labels cannot be computed on")
        state.program.helpers.update(helpers)
        out = state.new_value(node.output[0], x.width, x.rank, x.dtype)
        _emit(state, node, out, make(Operand(x.addr, CELL).load()))

    return lower


def _binary(make: Callable[[str, str], str], result: DType | None = None) -> LowerFn:
    def lower(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
        operands, width, rank, dtype = _broadcast(state, node)
        if len(operands) != 2:
            raise fail(node.op_type, node.name, "expects exactly two inputs")
        expr = make(operands[0].load(), operands[1].load())
        if dtype is DType.int and node.op_type == "Div" and result is None:
            expr = f"(f32.trunc {expr})"
        out = state.new_value(node.output[0], width, rank, result or dtype)
        _emit(state, node, out, expr)

    return lower


def _where(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    operands, width, rank, _ = _broadcast(state, node)
    cond, a, b = operands
    kinds = [state.values[n].dtype for n in node.input[1:] if n in state.values]
    out = state.new_value(node.output[0], width, rank, kinds[0] if kinds else DType.float)
    _emit(state, node, out, f"(select {a.load()} {b.load()} (f32.ne {cond.load()} (f32.const 0)))")


def _clip(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    low = attrs.get("min")
    high = attrs.get("max")
    for index in (1, 2):
        if index < len(node.input) and node.input[index]:
            const = state.const(node, index)
            if const is None or const.size != 1:
                raise fail(node.op_type, node.name, "min and max must be scalar constants")
            if index == 1:
                low = float(const.reshape(-1)[0])
            else:
                high = float(const.reshape(-1)[0])
    expr = Operand(x.addr, CELL).load()
    if low is not None:
        expr = f"(f32.max {expr} (f32.const {f32_literal(low)}))"
    if high is not None:
        expr = f"(f32.min {expr} (f32.const {f32_literal(high)}))"
    out = state.new_value(node.output[0], x.width, x.rank, x.dtype)
    _emit(state, node, out, expr)


def _cast(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    to = int(attrs["to"])
    if to == onnx.TensorProto.STRING:
        if x.classes is None:
            raise fail(node.op_type, node.name, "only class labels can be cast to string")
        state.alias(node.output[0], x, dtype=DType.string)
    elif x.dtype is DType.string:
        raise fail(node.op_type, node.name, "casting strings to numbers is not supported")
    elif to in _FLOAT_TYPES or (to in _INT_TYPES and x.dtype in (DType.int, DType.bool)):
        state.alias(node.output[0], x, dtype=DType.float if to in _FLOAT_TYPES else DType.int)
    elif to in _INT_TYPES:
        out = state.new_value(node.output[0], x.width, x.rank, DType.int)
        _emit(state, node, out, f"(f32.trunc {Operand(x.addr, CELL).load()})")
    elif to == onnx.TensorProto.BOOL:
        out = state.new_value(node.output[0], x.width, x.rank, DType.bool)
        cell = Operand(x.addr, CELL).load()
        _emit(state, node, out, bool_to_f32(f"(f32.ne {cell} (f32.const 0))"))
    else:
        raise fail(node.op_type, node.name, f"cast to {onnx.TensorProto.DataType.Name(to)}")


def _identity(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    state.alias(node.output[0], state.value(node, 0))


def _per_feature(
    state: Lowering, node: onnx.NodeProto, x: Value, values: list[float], what: str
) -> Operand:
    """An attribute list of length 1 or ``x.width`` as an operand."""
    if len(values) == 1:
        return Operand(immediate=float(values[0]))
    if len(values) != x.width:
        raise fail(node.op_type, node.name, f"{what} has {len(values)} values for width {x.width}")
    return Operand(state.program.add_f32(np.asarray(values, dtype=np.float32)), CELL)


def _scaler(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    offset = _per_feature(state, node, x, list(attrs.get("offset", [0.0])), "offset")
    scale = _per_feature(state, node, x, list(attrs.get("scale", [1.0])), "scale")
    out = state.new_value(node.output[0], x.width, x.rank)
    expr = f"(f32.mul (f32.sub {Operand(x.addr, CELL).load()} {offset.load()}) {scale.load()})"
    _emit(state, node, out, expr)


def _binarizer(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    threshold = f32_literal(float(attrs.get("threshold", 0.0)))
    out = state.new_value(node.output[0], x.width, x.rank)
    cond = f"(f32.gt {Operand(x.addr, CELL).load()} (f32.const {threshold}))"
    _emit(state, node, out, bool_to_f32(cond))


def _imputer(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    if "imputed_value_int64s" in attrs:
        raise fail(node.op_type, node.name, "integer imputation is not supported")
    values = list(attrs.get("imputed_value_floats", []))
    imputed = _per_feature(state, node, x, values, "imputed values")
    replaced = float(attrs.get("replaced_value_float", 0.0))
    cell = Operand(x.addr, CELL).load()
    if replaced != replaced:
        missing = f"(f32.ne {cell} {cell})"
    else:
        missing = f"(f32.eq {cell} (f32.const {f32_literal(replaced)}))"
    out = state.new_value(node.output[0], x.width, x.rank)
    _emit(state, node, out, f"(select {imputed.load()} {cell} {missing})")


def _f32(op: str) -> Callable[[str, str], str]:
    return lambda a, b: f"(f32.{op} {a} {b})"


def _compare(op: str) -> Callable[[str, str], str]:
    return lambda a, b: bool_to_f32(f"(f32.{op} {a} {b})")


def _logical(op: str) -> Callable[[str, str], str]:
    return lambda a, b: bool_to_f32(
        f"(i32.{op} (f32.ne {a} (f32.const 0)) (f32.ne {b} (f32.const 0)))"
    )


LOWERINGS: dict[tuple[str, str], LowerFn] = {
    ("", "Relu"): _unary(lambda x: f"(f32.max {x} (f32.const 0))"),
    ("", "Abs"): _unary(lambda x: f"(f32.abs {x})"),
    ("", "Neg"): _unary(lambda x: f"(f32.neg {x})"),
    ("", "Sqrt"): _unary(lambda x: f"(f32.sqrt {x})"),
    ("", "Floor"): _unary(lambda x: f"(f32.floor {x})"),
    ("", "Ceil"): _unary(lambda x: f"(f32.ceil {x})"),
    ("", "Reciprocal"): _unary(lambda x: f"(f32.div (f32.const 1) {x})"),
    ("", "Exp"): _unary(lambda x: via_f64("exp", x), ("exp",)),
    ("", "Log"): _unary(lambda x: via_f64("log", x), ("log",)),
    ("", "Sigmoid"): _unary(lambda x: via_f64("sigmoid", x), ("sigmoid",)),
    ("", "Tanh"): _unary(lambda x: via_f64("tanh", x), ("tanh",)),
    ("", "Not"): _unary(lambda x: bool_to_f32(f"(f32.eq {x} (f32.const 0))")),
    ("", "Add"): _binary(_f32("add")),
    ("", "Sub"): _binary(_f32("sub")),
    ("", "Mul"): _binary(_f32("mul")),
    ("", "Div"): _binary(_f32("div")),
    ("", "Min"): _binary(_f32("min")),
    ("", "Max"): _binary(_f32("max")),
    ("", "Less"): _binary(_compare("lt"), DType.bool),
    ("", "LessOrEqual"): _binary(_compare("le"), DType.bool),
    ("", "Greater"): _binary(_compare("gt"), DType.bool),
    ("", "GreaterOrEqual"): _binary(_compare("ge"), DType.bool),
    ("", "Equal"): _binary(_compare("eq"), DType.bool),
    ("", "And"): _binary(_logical("and"), DType.bool),
    ("", "Or"): _binary(_logical("or"), DType.bool),
    ("", "Xor"): _binary(_logical("xor"), DType.bool),
    ("", "Where"): _where,
    ("", "Clip"): _clip,
    ("", "Cast"): _cast,
    ("", "Identity"): _identity,
    (ML_DOMAIN, "Scaler"): _scaler,
    (ML_DOMAIN, "Binarizer"): _binarizer,
    (ML_DOMAIN, "Imputer"): _imputer,
}
