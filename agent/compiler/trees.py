"""ai.onnx.ml TreeEnsembleRegressor and TreeEnsembleClassifier.

Two layouts, same results (same f64 summation order):

* **Unrolled** (forests up to ``UNROLL_MAX_NODES`` nodes, depth 48, 16 targets): each tree
  is nested ``if``/``else`` code with the feature address and threshold as immediates and
  leaf weights added to f64 locals. About 1.5x faster than the table walk on the demo's
  100 depth-3 trees (bench/runtime_bench.py); trees are grouped into functions of about
  2000 nodes so Cranelift compiles them quickly.
* **Node table** (larger forests): every node is a 16-byte record in a data segment,
  ``[feature i32, threshold f32, true i32, false i32]`` with child fields holding the
  *absolute address* of the child's record. A leaf has feature -1 and holds the address
  range of its weights, 8-byte records ``[accumulator byte offset i32, weight f32]``. One
  tight loop walks each tree from its root. When every branch uses the same comparison and
  no node sends missing values to the true branch, that comparison is inlined; otherwise
  the mode and missing flag ride in the feature field's high bits and a generic comparison
  decodes them. Module size grows by 16 bytes per node instead of ~30 bytes of code.

Semantics follow ONNX Runtime, including its binary-classifier conventions (one weight
class plus ``base_values``: label from ``s > 0`` (``s > 0.5`` when all weights are
non-negative), probabilities ``[sigmoid(-s), sigmoid(s)]`` with LOGISTIC, else ``[1-s, s]``
(non-negative weights) or ``[-s, s]``). Layouts ONNX leaves vague and Runtime handles
idiosyncratically are refused with ``CompileError`` rather than guessed.
"""

from __future__ import annotations

import struct

import numpy as np
import onnx

from agent.compiler.forest import LEAF, Forest, floats, parse_forest
from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, Value, f32_literal, f64_literal, fail
from agent.compiler.scores import TRANSFORMS, class_labels, transform_kernel
from agent.compiler.vectors import ARGMAX_LOCALS, argmax_body

_COMPARE = {0: "f32.le", 1: "f32.lt", 2: "f32.ge", 3: "f32.gt", 4: "f32.eq", 5: "f32.ne"}
_NODE_BYTES = 16
_WEIGHT_BYTES = 8
_FEATURE_MASK = 0xFFFFFF
# Unrolled code is faster (thresholds are immediates, no record loads) but grows with the
# forest; past these bounds the node-table loop keeps modules and compile times small.
UNROLL_MAX_NODES = 20_000
_UNROLL_MAX_DEPTH = 48
_UNROLL_MAX_TARGETS = 16
_UNROLL_GROUP_NODES = 2_000  # nodes per generated function


def _aggregation(node: onnx.NodeProto, aggregate: str) -> tuple[str, str]:
    """(initial accumulator value, f64 combining instruction)."""
    if aggregate in ("SUM", "AVERAGE"):
        return "(f64.const 0)", "f64.add"
    if aggregate == "MIN":
        return "(f64.const inf)", "f64.min"
    if aggregate == "MAX":
        return "(f64.const -inf)", "f64.max"
    raise fail(node.op_type, node.name, f"aggregate_function {aggregate}")


def _f64_weight(weight: float) -> str:
    """A leaf weight as the f64 of its f32 value (ONNX weights are float attributes)."""
    return f64_literal(float(np.float32(weight)))


def walk_kernels(
    state: Lowering, node: onnx.NodeProto, x: Value, forest: Forest, aggregate: str
) -> int:
    """Add the kernels that sum the forest into f64 accumulators; returns their address."""
    init, combine = _aggregation(node, aggregate)
    acc = state.program.alloc(forest.n_targets * 8)
    stores = "\n".join(
        f"(f64.store (i32.const {acc + 8 * k}) {init})" for k in range(forest.n_targets)
    )
    state.add_kernel(node, stores)
    if (
        len(forest.modes) <= UNROLL_MAX_NODES
        and forest.depth <= _UNROLL_MAX_DEPTH
        and forest.n_targets <= _UNROLL_MAX_TARGETS
    ):
        _unrolled(state, node, x, forest, acc, combine)
    else:
        _table_walk(state, node, x, forest, acc, combine)
    return acc


def _unrolled(
    state: Lowering, node: onnx.NodeProto, x: Value, forest: Forest, acc: int, combine: str
) -> None:
    """Each tree as nested if/else with immediate thresholds; sums in f64 locals."""

    def branch(position: int) -> str:
        mode = forest.modes[position]
        if mode == LEAF:
            return (
                " ".join(
                    f"(local.set $s{t} ({combine} (local.get $s{t}) (f64.const {_f64_weight(w)})))"
                    for t, w in forest.leaf_weights.get(position, [])
                )
                or "(nop)"
            )
        value = f"(f32.load (i32.const {x.cell(forest.features[position])}))"
        threshold = f32_literal(forest.thresholds[position])
        test = f"({_COMPARE[mode]} {value} (f32.const {threshold}))"
        if forest.missing_true[position]:
            test = f"(i32.or {test} (f32.ne {value} {value}))"
        return (
            f"(if {test}\n(then {branch(forest.true_child[position])})\n"
            f"(else {branch(forest.false_child[position])}))"
        )

    targets = range(forest.n_targets)
    locals_ = " ".join(f"(local $s{t} f64)" for t in targets)
    load = "\n".join(f"(local.set $s{t} (f64.load (i32.const {acc + 8 * t})))" for t in targets)
    save = "\n".join(f"(f64.store (i32.const {acc + 8 * t}) (local.get $s{t}))" for t in targets)
    group: list[str] = []
    size = 0
    for index, root in enumerate(forest.roots):
        group.append(branch(root))
        size += _tree_size(forest, root)
        if size >= _UNROLL_GROUP_NODES or index == len(forest.roots) - 1:
            state.add_kernel(node, "\n".join([load, *group, save]), locals_)
            group, size = [], 0


def _tree_size(forest: Forest, root: int) -> int:
    count, stack = 0, [root]
    while stack:
        position = stack.pop()
        count += 1
        children = (forest.true_child[position], forest.false_child[position])
        stack.extend(c for c in children if c >= 0)
    return count


def _table_walk(
    state: Lowering, node: onnx.NodeProto, x: Value, forest: Forest, acc: int, combine: str
) -> None:
    """Node records in a data segment and one loop per tree (see the module docstring)."""
    uniform = forest.uniform_mode
    weight_blob = bytearray()
    leaf_ranges: dict[int, tuple[int, int]] = {}
    for position, mode in enumerate(forest.modes):
        if mode == LEAF:
            start = len(weight_blob)
            for target, weight in forest.leaf_weights.get(position, []):
                weight_blob += struct.pack("<if", target * 8, weight)
            leaf_ranges[position] = (start, len(weight_blob))
    weights_addr = state.program.add_data(bytes(weight_blob) or b"\0" * _WEIGHT_BYTES)
    nodes_addr = state.program.alloc(len(forest.modes) * _NODE_BYTES)
    blob = bytearray()
    for position, mode in enumerate(forest.modes):
        if mode == LEAF:
            start, end = leaf_ranges[position]
            blob += struct.pack("<ifii", -1, 0.0, weights_addr + start, weights_addr + end)
            continue
        feature = forest.features[position]
        field = (
            feature
            if uniform is not None
            else (feature | (mode << 24) | (int(forest.missing_true[position]) << 27))
        )
        blob += struct.pack(
            "<ifii",
            field,
            forest.thresholds[position],
            nodes_addr + forest.true_child[position] * _NODE_BYTES,
            nodes_addr + forest.false_child[position] * _NODE_BYTES,
        )
    state.program.segments.append((nodes_addr, bytes(blob)))
    roots_addr = state.program.add_i32([nodes_addr + r * _NODE_BYTES for r in forest.roots])
    decode = ""
    if uniform is None:
        decode = (
            "(local.set $m (i32.and (i32.shr_u (local.get $f) (i32.const 24)) (i32.const 7)))\n"
            "(local.set $miss (i32.and (i32.shr_u (local.get $f) (i32.const 27)) (i32.const 1)))\n"
            f"(local.set $f (i32.and (local.get $f) (i32.const {_FEATURE_MASK})))\n"
        )
    body = f"""(local.set $t (i32.const 0))
(loop $trees
  (local.set $n (i32.load offset={roots_addr} (local.get $t)))
  (block $leaf
    (loop $walk
      (local.set $f (i32.load (local.get $n)))
      (br_if $leaf (i32.lt_s (local.get $f) (i32.const 0)))
      {decode}(local.set $x (f32.load offset={x.addr} (i32.shl (local.get $f) (i32.const 2))))
      (local.set $n (select (i32.load offset=8 (local.get $n)) (i32.load offset=12 (local.get $n))
        {_condition(uniform)}))
      (br $walk)))
  (local.set $p (i32.load offset=8 (local.get $n)))
  (local.set $e (i32.load offset=12 (local.get $n)))
  (block $done
    (loop $weights
      (br_if $done (i32.ge_u (local.get $p) (local.get $e)))
      (local.set $q (i32.load (local.get $p)))
      (f64.store offset={acc} (local.get $q) ({combine} (f64.load offset={acc} (local.get $q))
        (f64.promote_f32 (f32.load offset=4 (local.get $p)))))
      (local.set $p (i32.add (local.get $p) (i32.const {_WEIGHT_BYTES})))
      (br $weights)))
  (local.set $t (i32.add (local.get $t) (i32.const 4)))
  (br_if $trees (i32.lt_u (local.get $t) (i32.const {len(forest.roots) * 4}))))
"""
    locals_ = (
        "(local $t i32) (local $n i32) (local $f i32) (local $x f32) (local $p i32) "
        "(local $e i32) (local $q i32) (local $m i32) (local $miss i32)"
    )
    state.add_kernel(node, body, locals_)


def _condition(uniform: int | None) -> str:
    """WAT (i32) for 'take the true branch' at the node ``$n`` with input ``$x``."""
    threshold = "(f32.load offset=4 (local.get $n))"
    if uniform is not None:
        return f"({_COMPARE[uniform]} (local.get $x) {threshold})"
    terms = [
        f"(i32.and (i32.eq (local.get $m) (i32.const {mode})) ({op} (local.get $x) {threshold}))"
        for mode, op in _COMPARE.items()
    ]
    terms.append("(i32.and (local.get $miss) (f32.ne (local.get $x) (local.get $x)))")
    expr = terms[0]
    for term in terms[1:]:
        expr = f"(i32.or {expr} {term})"
    return expr


def _finish_kernel(
    state: Lowering,
    node: onnx.NodeProto,
    acc: int,
    out: int,
    n_trees: int,
    base: list[float],
    aggregate: str,
) -> None:
    """scores[k] = (acc[k] / n_trees if AVERAGE) + base[k], rounded to f32 into ``out``."""
    lines = []
    for k in range(len(base)):
        score = f"(f64.load (i32.const {acc + 8 * k}))"
        if aggregate == "AVERAGE":
            score = f"(f64.div {score} (f64.const {f64_literal(float(n_trees))}))"
        if base[k]:
            score = f"(f64.add {score} (f64.const {f64_literal(base[k])}))"
        lines.append(f"(f32.store (i32.const {out + CELL * k}) (f32.demote_f64 {score}))")
    state.add_kernel(node, "\n".join(lines))


def lower_regressor(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    """TreeEnsembleRegressor (also the target of the opset 5 ``TreeEnsemble`` rewrite)."""
    x = state.value(node, 0)
    n_targets = int(attrs.get("n_targets", 1))
    if str(attrs.get("post_transform", "NONE")) != "NONE":
        raise fail(node.op_type, node.name, "only post_transform NONE is supported")
    base = floats(node, attrs, "base_values") or [0.0] * n_targets
    if len(base) != n_targets:
        raise fail(node.op_type, node.name, "base_values must have one value per target")
    aggregate = str(attrs.get("aggregate_function", "SUM"))
    forest = parse_forest(node, attrs, "target", n_targets, x.width)
    acc = walk_kernels(state, node, x, forest, aggregate)
    out = state.new_value(node.output[0], n_targets, 2)
    _finish_kernel(state, node, acc, out.addr, len(forest.roots), base, aggregate)


def _classifier(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    classes, strings = class_labels(node, dict(attrs))
    n_classes = len(classes)
    post = str(attrs.get("post_transform", "NONE"))
    if post not in TRANSFORMS:
        raise fail(node.op_type, node.name, f"post_transform {post} is not supported")
    base = floats(node, attrs, "base_values")
    weight_classes = {int(c) for c in attrs.get("class_ids", [])}
    forest = parse_forest(node, attrs, "class", n_classes, x.width)
    acc = walk_kernels(state, node, x, forest, "SUM")
    label_type = DType.string if strings else DType.int
    label = state.new_value(node.output[0], 1, 1, label_type, classes)
    probabilities = state.new_value(node.output[1], n_classes, 2, DType.float, classes)

    if n_classes == 2 and weight_classes == {0}:
        if len(base) > 1:
            raise fail(node.op_type, node.name, "binary scores with two base_values")
        score = state.program.slot(1)
        _finish_kernel(state, node, acc, score, len(forest.roots), (base or [0.0])[:1], "SUM")
        weights = np.asarray(floats(node, attrs, "class_weights"))
        _binary_kernel(
            state,
            node,
            score,
            label.addr,
            probabilities.addr,
            post,
            all_positive=bool(np.all(weights >= 0)),
        )
        return
    if weight_classes != set(range(n_classes)) or (n_classes == 2 and len(base) == 2):
        raise fail(node.op_type, node.name, "this class/weight layout is not supported")
    if base and len(base) != n_classes:
        raise fail(node.op_type, node.name, "base_values must have one value per class")
    scores = state.program.slot(n_classes)
    _finish_kernel(state, node, acc, scores, len(forest.roots), base or [0.0] * n_classes, "SUM")
    state.add_kernel(node, argmax_body(scores, n_classes, label.addr), ARGMAX_LOCALS)
    transform_kernel(state, node, post, scores, probabilities.addr, n_classes)


def _binary_kernel(
    state: Lowering,
    node: onnx.NodeProto,
    score: int,
    label: int,
    probabilities: int,
    post: str,
    all_positive: bool,
) -> None:
    """ONNX Runtime's single-score binary case (what skl2onnx emits for boosting)."""
    s = f"(f32.load (i32.const {score}))"
    cut = f32_literal(0.5 if all_positive else 0.0)
    lines = [f"(f32.store (i32.const {label}) (f32.convert_i32_u (f32.gt {s} (f32.const {cut}))))"]
    if post == "LOGISTIC":  # whatever the weights' signs (checked against Runtime)
        state.program.helpers.add("sigmoid")
        negative = f"(f32.demote_f64 (call $sigmoid (f64.neg (f64.promote_f32 {s}))))"
        positive = f"(f32.demote_f64 (call $sigmoid (f64.promote_f32 {s})))"
    elif all_positive:
        negative, positive = f"(f32.sub (f32.const 1) {s})", s
    else:
        negative, positive = f"(f32.neg {s})", s
    lines.append(f"(f32.store (i32.const {probabilities}) {negative})")
    lines.append(f"(f32.store (i32.const {probabilities + CELL}) {positive})")
    state.add_kernel(node, "\n".join(lines))


LOWERINGS: dict[tuple[str, str], LowerFn] = {
    (ML_DOMAIN, "TreeEnsembleRegressor"): lower_regressor,
    (ML_DOMAIN, "TreeEnsembleClassifier"): _classifier,
}
