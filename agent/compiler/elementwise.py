"""Cell-by-cell operators: unary math, broadcasting binary arithmetic and comparisons,
Where, Clip, casts, and the ai.onnx.ml preprocessors that act per cell (Scaler,
Binarizer, Imputer).

Each operator is written once as a cell expression over ``Lanes``; rows of four or more
cells run it as f32x4 SIMD, narrower ones as scalar f32 (exp, log, sigmoid and tanh have
no SIMD form and always run scalar through the f64 helpers).

Broadcasting supported: a row value ``[N, k]`` with another of the same width or width 1,
and with constants of shape ``[]``, ``[1]``, ``[k]`` or ``[1, k]``. Anything else (a
constant that would add an axis, ``[N]`` against ``[N, k]``) raises ``CompileError``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, Value, fail
from agent.compiler.wat import SCALAR, VECTOR, VECTOR_LANES, Lanes, Operand, via_f64

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
_INT_TYPES = {
    onnx.TensorProto.INT8,
    onnx.TensorProto.INT16,
    onnx.TensorProto.INT32,
    onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.UINT16,
    onnx.TensorProto.UINT32,
    onnx.TensorProto.UINT64,
}

Expr = Callable[[Lanes], str]


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


def _emit(
    state: Lowering, node: onnx.NodeProto, out: Value, expr: Expr, vectorizable: bool = True
) -> None:
    lanes = VECTOR if vectorizable and out.width >= VECTOR_LANES else SCALAR
    state.add_kernel(node, lanes.loop(out.width, out.addr, expr(lanes)), "(local $o i32)")


def _row(x: Value) -> Operand:
    return Operand(x.addr, CELL)


def _unary(make: Callable[[Lanes, str], str], helpers: tuple[str, ...] = ()) -> LowerFn:
    def lower(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
        x = state.value(node, 0)
        if x.dtype is DType.string:
            raise fail(node.op_type, node.name, "string class labels cannot be computed on")
        state.program.helpers.update(helpers)
        out = state.new_value(node.output[0], x.width, x.rank, x.dtype, dims=x.dims)
        _emit(state, node, out, lambda lanes: make(lanes, lanes.load(_row(x))), not helpers)

    return lower


def _math(helper: str) -> LowerFn:
    """A transcendental function: scalar only, through an f64 helper."""
    return _unary(lambda lanes, x: via_f64(helper, x), (helper,))


def _binary(make: Callable[[Lanes, str, str], str], result: DType | None = None) -> LowerFn:
    def lower(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
        operands, width, rank, dtype = _broadcast(state, node)
        if len(operands) != 2:
            raise fail(node.op_type, node.name, "expects exactly two inputs")
        a, b = operands
        truncate = dtype is DType.int and node.op_type == "Div" and result is None

        def expr(lanes: Lanes) -> str:
            value = make(lanes, lanes.load(a), lanes.load(b))
            return lanes.op("trunc", value) if truncate else value

        out = state.new_value(
            node.output[0], width, rank, result or dtype, dims=_dims(state, node, width)
        )
        _emit(state, node, out, expr)

    return lower


def _variadic(op: str) -> LowerFn:
    """Sum, Min, Max of any number of inputs (ONNX lets them take one or more), folded
    from the first input to the last."""

    def lower(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
        operands, width, rank, dtype = _broadcast(state, node)

        def expr(lanes: Lanes) -> str:
            value = lanes.load(operands[0])
            for operand in operands[1:]:
                value = lanes.op(op, value, lanes.load(operand))
            return value

        out = state.new_value(node.output[0], width, rank, dtype, dims=_dims(state, node, width))
        _emit(state, node, out, expr)

    return lower


def _dims(state: Lowering, node: onnx.NodeProto, width: int) -> tuple[int, ...] | None:
    """The row shape of an element-wise result: that of an input row of its width."""
    for name in node.input:
        value = state.values.get(name)
        if value is not None and value.width == width and value.dims is not None:
            return value.dims
    return None


def _where(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    operands, width, rank, _ = _broadcast(state, node)
    cond, a, b = operands
    kinds = [state.values[n].dtype for n in node.input[1:] if n in state.values]
    out = state.new_value(node.output[0], width, rank, kinds[0] if kinds else DType.float)
    _emit(
        state,
        node,
        out,
        lambda lanes: lanes.select(
            lanes.load(a), lanes.load(b), lanes.op("ne", lanes.load(cond), lanes.const(0.0))
        ),
    )


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

    def expr(lanes: Lanes) -> str:
        value = lanes.load(_row(x))
        if low is not None:
            value = lanes.op("max", value, lanes.const(float(low)))
        if high is not None:
            value = lanes.op("min", value, lanes.const(float(high)))
        return value

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
        _emit(state, node, out, lambda lanes: lanes.op("trunc", lanes.load(_row(x))))
    elif to == onnx.TensorProto.BOOL:
        out = state.new_value(node.output[0], x.width, x.rank, DType.bool)
        _emit(
            state,
            node,
            out,
            lambda lanes: lanes.flag(lanes.op("ne", lanes.load(_row(x)), lanes.const(0.0))),
        )
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
    _emit(
        state,
        node,
        out,
        lambda lanes: lanes.op(
            "mul", lanes.op("sub", lanes.load(_row(x)), lanes.load(offset)), lanes.load(scale)
        ),
    )


def _binarizer(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    threshold = float(attrs.get("threshold", 0.0))
    out = state.new_value(node.output[0], x.width, x.rank)
    _emit(
        state,
        node,
        out,
        lambda lanes: lanes.flag(lanes.op("gt", lanes.load(_row(x)), lanes.const(threshold))),
    )


def _imputer(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    if "imputed_value_int64s" in attrs:
        raise fail(node.op_type, node.name, "integer imputation is not supported")
    values = list(attrs.get("imputed_value_floats", []))
    imputed = _per_feature(state, node, x, values, "imputed values")
    replaced = float(attrs.get("replaced_value_float", 0.0))

    def expr(lanes: Lanes) -> str:
        cell = lanes.load(_row(x))
        if replaced != replaced:
            missing = lanes.op("ne", cell, cell)
        else:
            missing = lanes.op("eq", cell, lanes.const(replaced))
        return lanes.select(lanes.load(imputed), cell, missing)

    out = state.new_value(node.output[0], x.width, x.rank)
    _emit(state, node, out, expr)


def _arith(op: str) -> Callable[[Lanes, str, str], str]:
    return lambda lanes, a, b: lanes.op(op, a, b)


def _compare(op: str) -> Callable[[Lanes, str, str], str]:
    return lambda lanes, a, b: lanes.flag(lanes.op(op, a, b))


def _logical(op: str) -> Callable[[Lanes, str, str], str]:
    return lambda lanes, a, b: lanes.flag(
        lanes.logic(op, lanes.op("ne", a, lanes.const(0.0)), lanes.op("ne", b, lanes.const(0.0)))
    )


LOWERINGS: dict[tuple[str, str], LowerFn] = {
    ("", "Relu"): _unary(lambda lanes, x: lanes.op("max", x, lanes.const(0.0))),
    ("", "Abs"): _unary(lambda lanes, x: lanes.op("abs", x)),
    ("", "Neg"): _unary(lambda lanes, x: lanes.op("neg", x)),
    ("", "Sqrt"): _unary(lambda lanes, x: lanes.op("sqrt", x)),
    ("", "Floor"): _unary(lambda lanes, x: lanes.op("floor", x)),
    ("", "Ceil"): _unary(lambda lanes, x: lanes.op("ceil", x)),
    ("", "Reciprocal"): _unary(lambda lanes, x: lanes.op("div", lanes.const(1.0), x)),
    ("", "Not"): _unary(lambda lanes, x: lanes.flag(lanes.op("eq", x, lanes.const(0.0)))),
    ("", "Exp"): _math("exp"),
    ("", "Log"): _math("log"),
    ("", "Sigmoid"): _math("sigmoid"),
    ("", "Tanh"): _math("tanh"),
    ("", "Add"): _binary(_arith("add")),
    ("", "Sub"): _binary(_arith("sub")),
    ("", "Mul"): _binary(_arith("mul")),
    ("", "Div"): _binary(_arith("div")),
    ("", "Min"): _variadic("min"),
    ("", "Max"): _variadic("max"),
    ("", "Sum"): _variadic("add"),
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
