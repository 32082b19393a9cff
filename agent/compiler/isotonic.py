"""Isotonic calibration written as scikit-learn computes it.

skl2onnx 1.20 converts each isotonic calibrator of a ``CalibratedClassifierCV`` into a
nearest-threshold lookup, ``Y[argmin |x - X|]``, where scikit-learn interpolates linearly
between the thresholds (``interp1d`` on ``X_thresholds_``/``y_thresholds_``, clipped to
their range). Over a base estimator with few distinct scores (a tree) the two agree; over
continuous scores they do not (0.31 apart on iris over gradient boosting). This rewrite
replaces every ``Sub(x, X) -> Abs -> ArgMin -> ArrayFeatureExtractor(Y, .)`` chain by
the interpolation, in ONNX operators the compiler lowers (so onnxruntime runs the same
graph):

    segment = min(count(x > X[1:-1]), K - 2)         Greater, Cast, ReduceSum, Cast
    y = Y[segment] + slope[segment] * (x - X[segment])   three lookups, Sub, Mul, Add

``x`` is already clipped to ``[X[0], X[-1]]`` by the converter's ``Clip``. A chain that
does not look exactly like this is left alone (the library check then decides).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_ML = "ai.onnx.ml"


def interpolate_isotonic(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every nearest-threshold chain replaced by linear interpolation."""
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    index = {id(node): i for i, node in enumerate(graph.node)}
    new_inits: list[onnx.TensorProto] = []
    for n, lookup in enumerate(graph.node):
        chain = _chain(lookup, producer, consts, uses)
        if chain is None:
            continue
        sub, abs_, argmin, x_name, thresholds, values = chain
        prefix = f"isotonic{n}_"
        nodes, inits = _interpolation(prefix, x_name, thresholds, values, lookup.output[0], opset)
        replaced[n] = nodes
        new_inits += inits
        dropped.update(index[id(node)] for node in (sub, abs_, argmin))
    if not replaced:
        return model
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    del rewritten.graph.node[:]
    for i, node in enumerate(graph.node):
        if i in dropped:
            continue
        rewritten.graph.node.extend(replaced.get(i, [node]))
    rewritten.graph.initializer.extend(new_inits)
    return rewritten


def _chain(
    lookup: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    consts: dict[str, np.ndarray],
    uses: dict[str, int],
) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto, str, np.ndarray, np.ndarray] | None:
    """The nearest-threshold chain ending in ``lookup``, or None."""
    if lookup.op_type != "ArrayFeatureExtractor" or lookup.domain != _ML:
        return None
    values = consts.get(lookup.input[0])
    argmin = producer.get(lookup.input[1])
    if values is None or values.ndim != 1 or argmin is None or argmin.op_type != "ArgMin":
        return None
    abs_ = producer.get(argmin.input[0])
    sub = producer.get(abs_.input[0]) if abs_ is not None and abs_.op_type == "Abs" else None
    if sub is None or sub.op_type != "Sub" or abs_ is None:
        return None
    thresholds = consts.get(sub.input[1])
    if thresholds is None or thresholds.shape != values.shape or values.size < 2:
        return None
    if np.any(np.diff(thresholds.astype(np.float64)) < 0):
        return None
    if any(uses.get(node.output[0], 0) != 1 for node in (sub, abs_, argmin)):
        return None
    return sub, abs_, argmin, sub.input[0], thresholds, values


def _interpolation(
    prefix: str, x: str, thresholds: np.ndarray, values: np.ndarray, out: str, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    xs = thresholds.astype(np.float32).astype(np.float64)
    ys = values.astype(np.float32).astype(np.float64)
    width = np.diff(xs)
    slopes = np.divide(np.diff(ys), width, out=np.zeros_like(width), where=width > 0)

    def name(suffix: str) -> str:
        return prefix + suffix

    def table(suffix: str, array: object, dtype: type = np.float32) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(array, dtype=dtype), name(suffix))

    inits = [
        table("inner", xs[1:-1] if xs.size > 2 else xs[:1]),
        table("x_low", xs[:-1]),
        table("y_low", ys[:-1]),
        table("slope", slopes),
        table("column", [-1, 1], np.int64),
        table("axis", [1], np.int64),
    ]
    counted = name("above")
    nodes = [
        helper.make_node("Greater", [x, name("inner")], [name("gt")]),
        helper.make_node("Cast", [name("gt")], [name("gtf")], to=TensorProto.FLOAT),
    ]
    if opset >= 13:
        nodes.append(helper.make_node("ReduceSum", [name("gtf"), name("axis")], [counted]))
    else:
        nodes.append(helper.make_node("ReduceSum", [name("gtf")], [counted], axes=[1]))
    if xs.size == 2:  # no inner threshold: always the one segment
        nodes.append(helper.make_node("Mul", [counted, name("zero")], [name("seg_f")]))
        inits.append(table("zero", 0.0))
    else:
        nodes.append(helper.make_node("Identity", [counted], [name("seg_f")]))
    nodes.append(helper.make_node("Cast", [name("seg_f")], [name("seg")], to=TensorProto.INT64))
    for part in ("x_low", "y_low", "slope"):
        nodes.append(
            helper.make_node(
                "ArrayFeatureExtractor", [name(part), name("seg")], [name(part + "_at")], domain=_ML
            )
        )
        nodes.append(
            helper.make_node("Reshape", [name(part + "_at"), name("column")], [name(part + "_r")])
        )
    nodes += [
        helper.make_node("Sub", [x, name("x_low_r")], [name("dx")]),
        helper.make_node("Mul", [name("dx"), name("slope_r")], [name("dy")]),
        helper.make_node("Add", [name("y_low_r"), name("dy")], [out]),
    ]
    return nodes, inits
