"""k-nearest neighbours, brute force, lowered by the compiler itself.

skl2onnx writes ``KNeighborsClassifier``/``Regressor`` as an ONNX ``Scan`` over the
training set followed by ``TopK``, which the per-row compiler does not lower. Instead
``convert`` hands skl2onnx this module's converter, which writes one node of the
compiler's own domain, ``ai.edge_agent.NearestNeighbours``, carrying the training rows
(f64, as scikit-learn keeps them), ``k``, the metric and each training row's class index
(classifier) or target (regressor). onnxruntime cannot run that node: the parity tests
compare the module with scikit-learn and with onnxruntime running skl2onnx's own graph.

Per row the kernel computes, in f64 from the f32 row, the distance to every training row
(squared euclidean, which ranks like euclidean, or manhattan), then picks the ``k``
smallest in ``k`` passes, the lower index first among equal distances (as scikit-learn's
heap keeps the first of equals), and votes: probabilities are the class weights / their total
and the label the first class with the most; a regressor takes the weighted mean. Cost
per row: O(training rows x (features + k)), so the training set is capped by the fuel a
prediction may use (``FUEL_SHARE`` of the default ``limits.model_fuel_per_row``: about
10,000 rows of 10 features with k=5). Weights: uniform, or ``distance`` (1 / distance;
neighbours at distance 0, if any, share the vote alone, as scikit-learn does).
Refused: callable weights, other metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from agent.compiler.graph import Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, fail
from agent.compiler.scores import class_labels
from agent.compiler.vectors import ARGMAX_LOCALS, argmax_body
from agent.errors import CompileError
from agent.limits import Limits

DOMAIN = "ai.edge_agent"
OP = "NearestNeighbours"
# Measured wasm fuel of one prediction: ~30 units per training value scanned and ~15 per
# training row and pick. A model must fit FUEL_SHARE of the agent's default per-row fuel
# (limits.model_fuel_per_row), or every prediction would hit the deadline.
FUEL_PER_VALUE = 30
FUEL_PER_ROW_AND_PICK = 15
FUEL_SHARE = 0.8
_METRICS = {
    ("minkowski", 2): "euclidean",
    ("minkowski", 1): "manhattan",
    ("euclidean", None): "euclidean",
    ("manhattan", None): "manhattan",
}


def check_supported(model: Any) -> str:
    """The metric of a fitted KNeighbors estimator, or ``CompileError`` naming it and why
    it cannot be compiled."""
    p = getattr(model, "p", 2) if model.metric == "minkowski" else None
    metric = _METRICS.get((model.metric, p))
    if metric is None or model.metric_params:
        raise CompileError(
            f"{type(model).__name__} with metric {model.metric!r}: only euclidean and "
            "manhattan distances are supported"
        )
    if model.weights not in ("uniform", "distance"):
        raise CompileError(
            f"{type(model).__name__} with weights={model.weights!r}: only uniform and "
            "distance weights are supported"
        )
    rows, features = model._fit_X.shape
    per_row = FUEL_PER_VALUE * features + FUEL_PER_ROW_AND_PICK * (model.n_neighbors + 1)
    budget = int(Limits().model_fuel_per_row * FUEL_SHARE)
    if rows * per_row > budget:
        raise CompileError(
            f"{type(model).__name__} keeps {rows} training rows of {features} features; every "
            f"prediction scans them all (about {rows * per_row} fuel units, over the "
            f"{budget} a row may use): at most {budget // per_row} rows compile"
        )
    return metric


def skl2onnx_converter(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx converter for KNeighborsClassifier/Regressor (see the module doc)."""
    model = operator.raw_operator
    metric = check_supported(model)
    training = numpy_helper.from_array(np.asarray(model._fit_X, dtype=np.float64), "training")
    attrs: dict[str, Any] = {
        "k": int(model.n_neighbors),
        "metric": metric,
        "weights": str(model.weights),
        "training": training,
    }
    outputs = [o.full_name for o in operator.outputs]
    if hasattr(model, "classes_"):
        classes = model.classes_
        if classes.dtype.kind in "OUS":
            attrs["classlabels_strings"] = [str(c) for c in classes]
        else:
            attrs["classlabels_int64s"] = [int(c) for c in classes]
        attrs["labels"] = [int(i) for i in np.asarray(model._y).reshape(-1)]
    else:
        attrs["targets"] = [float(v) for v in np.asarray(model._y, np.float64).reshape(-1)]
    container.add_node(
        OP,
        [operator.inputs[0].full_name],
        outputs,
        op_domain=DOMAIN,
        op_version=1,
        name=scope.get_unique_operator_name("NearestNeighbours"),
        **attrs,
    )


def _nearest_neighbours(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    training = np.asarray(attrs.get("training"), dtype=np.float64)
    k = int(attrs.get("k", 0))
    if training.ndim != 2 or training.shape[1] != x.width or not 1 <= k <= training.shape[0]:
        raise fail(node.op_type, node.name, "training rows or k do not fit the input")
    n = training.shape[0]
    program = state.program
    table = program.add_data(training.astype("<f8").tobytes())
    distances = program.alloc(8 * n)
    feature = f"(f64.promote_f32 (f32.load offset={x.addr} (local.get $f)))"
    difference = f"(f64.sub {feature} (f64.load (local.get $p)))"
    if str(attrs.get("metric")) == "manhattan":
        step = f"(local.set $s (f64.add (local.get $s) (f64.abs {difference})))"
    else:
        step = (
            f"(local.set $d {difference})\n"
            "(local.set $s (f64.add (local.get $s) (f64.mul (local.get $d) (local.get $d))))"
        )
    scan = f"""(local.set $p (i32.const {table}))
(local.set $j (i32.const 0))
(loop $rows
  (local.set $s (f64.const 0))
  (local.set $f (i32.const 0))
  (loop $features
    {step}
    (local.set $p (i32.add (local.get $p) (i32.const 8)))
    (local.set $f (i32.add (local.get $f) (i32.const {CELL})))
    (br_if $features (i32.lt_u (local.get $f) (i32.const {x.width * CELL}))))
  (f64.store offset={distances} (local.get $j) (local.get $s))
  (local.set $j (i32.add (local.get $j) (i32.const 8)))
  (br_if $rows (i32.lt_u (local.get $j) (i32.const {8 * n}))))"""
    classifier = "labels" in attrs
    weighted = str(attrs.get("weights", "uniform")) == "distance"
    # The weight of a pick: 1, or 1 / distance ($best is squared for euclidean); a row at
    # distance 0 from some neighbours gives them weight 1 and the others 0 (scikit-learn).
    distance = (
        "(f64.sqrt (local.get $best))"
        if str(attrs.get("metric")) == "euclidean"
        else "(local.get $best)"
    )
    weight = f"(f64.div (f64.const 1) {distance})" if weighted else "(f64.const 1)"
    is_zero = "(f64.eq (local.get $best) (f64.const 0))" if weighted else "(i32.const 0)"
    if classifier:
        classes, strings = class_labels(node, dict(attrs))
        labels = [int(v) for v in attrs["labels"]]
        if len(labels) != n or not all(0 <= v < len(classes) for v in labels):
            raise fail(node.op_type, node.name, "a training label is not a class index")
        n_classes = len(classes)
        owner = program.add_i32(np.asarray(labels) * 8)
        sums = program.alloc(8 * n_classes)  # f64 weight per class
        zeros = program.alloc(8 * n_classes)  # f64 count of zero-distance picks per class
        label = state.new_value(
            node.output[0], 1, 1, DType.string if strings else DType.int, classes
        )
        probabilities = state.new_value(node.output[1], n_classes, 2, DType.float, classes)
        start = "\n".join(
            f"(f64.store (i32.const {base + 8 * c}) (f64.const 0))"
            for base in (sums, zeros)
            for c in range(n_classes)
        )
        vote = f"""(local.set $c (i32.load offset={owner} (i32.shr_u (local.get $b) (i32.const 1))))
(local.set $w {weight})
(f64.store offset={sums} (local.get $c) (f64.add (f64.load offset={sums} (local.get $c))
  (local.get $w)))
(local.set $t (f64.add (local.get $t) (local.get $w)))
(if {is_zero} (then
  (f64.store offset={zeros} (local.get $c) (f64.add (f64.load offset={zeros} (local.get $c))
    (f64.const 1)))
  (local.set $z (f64.add (local.get $z) (f64.const 1)))))"""
        share = "\n".join(
            f"(f32.store (i32.const {probabilities.cell(c)}) (f32.demote_f64 (select "
            f"(f64.div (f64.load (i32.const {zeros + 8 * c})) (local.get $z)) "
            f"(f64.div (f64.load (i32.const {sums + 8 * c})) (local.get $t)) "
            "(f64.gt (local.get $z) (f64.const 0)))))"
            for c in range(n_classes)
        )
        finish = share + "\n" + argmax_body(probabilities.addr, n_classes, label.addr)
    else:
        targets = np.asarray(attrs.get("targets", []), dtype=np.float64)
        if targets.size != n:
            raise fail(node.op_type, node.name, "one target per training row is needed")
        values = program.add_data(targets.astype("<f8").tobytes())
        out = state.new_value(node.output[0], 1, 2)
        start = "(local.set $y (f64.const 0)) (local.set $zy (f64.const 0))"
        vote = f"""(local.set $w {weight})
(local.set $y (f64.add (local.get $y) (f64.mul (local.get $w)
  (f64.load offset={values} (local.get $b)))))
(local.set $t (f64.add (local.get $t) (local.get $w)))
(if {is_zero} (then
  (local.set $zy (f64.add (local.get $zy) (f64.load offset={values} (local.get $b))))
  (local.set $z (f64.add (local.get $z) (f64.const 1)))))"""
        finish = (
            f"(f32.store (i32.const {out.addr}) (f32.demote_f64 (select "
            "(f64.div (local.get $zy) (local.get $z)) (f64.div (local.get $y) (local.get $t)) "
            "(f64.gt (local.get $z) (f64.const 0)))))"
        )
    start += "\n(local.set $t (f64.const 0)) (local.set $z (f64.const 0))"
    pick = f"""(local.set $r (i32.const 0))
(loop $picks
  (local.set $best (f64.const inf))
  (local.set $b (i32.const 0))
  (local.set $j (i32.const 0))
  (loop $candidates
    (if (f64.lt (f64.load offset={distances} (local.get $j)) (local.get $best)) (then
      (local.set $best (f64.load offset={distances} (local.get $j)))
      (local.set $b (local.get $j))))
    (local.set $j (i32.add (local.get $j) (i32.const 8)))
    (br_if $candidates (i32.lt_u (local.get $j) (i32.const {8 * n}))))
  (f64.store offset={distances} (local.get $b) (f64.const inf))
  {vote}
  (local.set $r (i32.add (local.get $r) (i32.const 1)))
  (br_if $picks (i32.lt_u (local.get $r) (i32.const {k}))))"""
    locals_ = (
        "(local $p i32) (local $j i32) (local $f i32) (local $s f64) (local $d f64) "
        "(local $r i32) (local $b i32) (local $best f64) (local $c i32) (local $t f64) "
        "(local $w f64) (local $z f64) (local $y f64) (local $zy f64) " + ARGMAX_LOCALS
    )
    # A missing feature makes every distance NaN: the outputs are NaN, as no neighbour is
    # nearer than another (scikit-learn refuses such a row).
    nan_out = "\n".join(
        f"(f32.store (i32.const {v.cell(c)}) (f32.const nan))"
        for v in ([label, probabilities] if classifier else [out])
        for c in range(v.width)
    )
    body = f"""{scan}
(if (f64.eq (f64.load (i32.const {distances})) (f64.load (i32.const {distances})))
  (then
{start}
{pick}
{finish})
  (else
{nan_out}))"""
    state.add_kernel(node, body, locals_)


LOWERINGS: dict[tuple[str, str], LowerFn] = {(DOMAIN, OP): _nearest_neighbours}
