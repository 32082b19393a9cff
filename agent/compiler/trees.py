"""ai.onnx.ml TreeEnsembleRegressor and TreeEnsembleClassifier.

Layout: every node is a 16-byte record in a data segment, ``[feature i32, threshold f32,
true i32, false i32]`` with child fields holding the *absolute address* of the child's
record (no index arithmetic in the loop). A leaf has feature -1 and holds the address range
of its weights: 8-byte records ``[accumulator byte offset i32, weight f32]``. One tight
loop walks each tree from its root (addresses in a roots table) and adds the leaf's
weights to f64 accumulators. When every branch uses the same comparison and no node sends
missing values to the true branch, that comparison is inlined; otherwise the mode and
missing flag ride in the feature field's high bits and a generic comparison decodes them.

Semantics follow ONNX Runtime, including its binary-classifier conventions (one weight
class plus ``base_values``: label from ``s > 0`` (``s > 0.5`` when all weights are
non-negative), probabilities ``[sigmoid(-s), sigmoid(s)]`` with LOGISTIC, else ``[1-s, s]``
(non-negative weights) or ``[-s, s]``). Layouts ONNX leaves vague
and Runtime handles idiosyncratically are refused with ``CompileError`` rather than
guessed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, Value, f32_literal, f64_literal, fail
from agent.compiler.scores import TRANSFORMS, class_labels, transform_kernel
from agent.compiler.vectors import ARGMAX_LOCALS, argmax_body

_MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4,
          "BRANCH_NEQ": 5}
_COMPARE = {0: "f32.le", 1: "f32.lt", 2: "f32.ge", 3: "f32.gt", 4: "f32.eq", 5: "f32.ne"}
_NODE_BYTES = 16
_WEIGHT_BYTES = 8
_FEATURE_MASK = 0xFFFFFF


@dataclass(frozen=True)
class _Ensemble:
    nodes_addr: int
    roots_addr: int
    n_trees: int
    n_targets: int
    uniform_mode: int | None  # the one comparison all branches use, or None for generic


def _floats(node: onnx.NodeProto, attrs: Attrs, name: str) -> list[float]:
    if name in attrs:
        return [float(v) for v in attrs[name]]
    tensor = attrs.get(f"{name}_as_tensor")
    if tensor is not None:
        raise fail(node.op_type, node.name, f"{name}_as_tensor (double precision) is not supported")
    return []


def _build_tables(
    state: Lowering,
    node: onnx.NodeProto,
    attrs: Attrs,
    x: Value,
    prefix: str,
    n_targets: int,
) -> _Ensemble:
    tree_ids = [int(v) for v in attrs.get("nodes_treeids", [])]
    node_ids = [int(v) for v in attrs.get("nodes_nodeids", [])]
    features = [int(v) for v in attrs.get("nodes_featureids", [])]
    thresholds = _floats(node, attrs, "nodes_values")
    modes = [str(m) for m in attrs.get("nodes_modes", [])]
    true_ids = [int(v) for v in attrs.get("nodes_truenodeids", [])]
    false_ids = [int(v) for v in attrs.get("nodes_falsenodeids", [])]
    missing = [int(v) for v in attrs.get("nodes_missing_value_tracks_true", [])] or [0] * len(
        tree_ids
    )
    count = len(tree_ids)
    if not count or any(
        len(column) != count
        for column in (node_ids, features, thresholds, modes, true_ids, false_ids, missing)
    ):
        raise fail(node.op_type, node.name, "node attributes are missing or of unequal length")
    for mode in modes:
        if mode != "LEAF" and mode not in _MODES:
            raise fail(node.op_type, node.name, f"node mode {mode}")

    weight_trees = [int(v) for v in attrs.get(f"{prefix}_treeids", [])]
    weight_nodes = [int(v) for v in attrs.get(f"{prefix}_nodeids", [])]
    weight_targets = [int(v) for v in attrs.get(f"{prefix}_ids", [])]
    weights = _floats(node, attrs, f"{prefix}_weights")
    if not (len(weight_trees) == len(weight_nodes) == len(weight_targets) == len(weights)):
        raise fail(node.op_type, node.name, f"{prefix}_* attributes are of unequal length")
    if any(not 0 <= t < n_targets for t in weight_targets):
        raise fail(node.op_type, node.name, "a leaf weight targets an unknown output")

    branch_modes = {_MODES[m] for m in modes if m != "LEAF"}
    has_missing = any(missing[i] for i in range(count) if modes[i] != "LEAF")
    uniform = next(iter(branch_modes)) if len(branch_modes) == 1 and not has_missing else None
    if not branch_modes:
        uniform = 0

    index = {(tree_ids[i], node_ids[i]): i for i in range(count)}
    if len(index) != count:
        raise fail(node.op_type, node.name, "duplicate (tree, node) ids")
    leaf_weights: dict[int, list[tuple[int, float]]] = {}
    for tree, nid, target, weight in zip(weight_trees, weight_nodes, weight_targets, weights,
                                         strict=True):
        position = index.get((tree, nid))
        if position is None or modes[position] != "LEAF":
            raise fail(node.op_type, node.name, "a weight is attached to a node that is not a leaf")
        leaf_weights.setdefault(position, []).append((target, weight))

    weight_blob = bytearray()
    leaf_ranges: dict[int, tuple[int, int]] = {}
    for position in range(count):
        if modes[position] == "LEAF":
            start = len(weight_blob)
            for target, weight in leaf_weights.get(position, []):
                weight_blob += struct.pack("<if", target * 8, weight)
            leaf_ranges[position] = (start, len(weight_blob))
    weights_addr = state.program.add_data(bytes(weight_blob) or b"\0" * _WEIGHT_BYTES)
    nodes_addr = state.program.alloc(count * _NODE_BYTES)

    def address(tree: int, nid: int) -> int:
        position = index.get((tree, nid))
        if position is None:
            raise fail(node.op_type, node.name, "a branch points to a node that does not exist")
        return nodes_addr + position * _NODE_BYTES

    blob = bytearray()
    for i in range(count):
        if modes[i] == "LEAF":
            start, end = leaf_ranges[i]
            blob += struct.pack("<ifii", -1, 0.0, weights_addr + start, weights_addr + end)
            continue
        if not 0 <= features[i] < x.width:
            raise fail(node.op_type, node.name, "a node reads a feature beyond the input width")
        field = features[i] if uniform is not None else (
            features[i] | (_MODES[modes[i]] << 24) | (missing[i] << 27)
        )
        blob += struct.pack(
            "<ifii", field, thresholds[i], address(tree_ids[i], true_ids[i]),
            address(tree_ids[i], false_ids[i]),
        )
    state.program.segments.append((nodes_addr, bytes(blob)))
    trees = list(dict.fromkeys(tree_ids))
    roots = [address(tree, 0) for tree in trees]
    roots_addr = state.program.add_i32(roots)
    return _Ensemble(nodes_addr, roots_addr, len(trees), n_targets, uniform)


def _condition(ensemble: _Ensemble) -> str:
    """WAT (i32) for 'take the true branch' at the node ``$n`` with input ``$x``."""
    threshold = "(f32.load offset=4 (local.get $n))"
    if ensemble.uniform_mode is not None:
        return f"({_COMPARE[ensemble.uniform_mode]} (local.get $x) {threshold})"
    terms = [
        f"(i32.and (i32.eq (local.get $m) (i32.const {mode})) ({op} (local.get $x) {threshold}))"
        for mode, op in _COMPARE.items()
    ]
    terms.append("(i32.and (local.get $miss) (f32.ne (local.get $x) (local.get $x)))")
    expr = terms[0]
    for term in terms[1:]:
        expr = f"(i32.or {expr} {term})"
    return expr


def _walk_kernel(
    state: Lowering, node: onnx.NodeProto, x: Value, ensemble: _Ensemble, aggregate: str
) -> int:
    """Add the traversal kernel; returns the address of the f64 accumulators."""
    acc = state.program.alloc(ensemble.n_targets * 8)
    if aggregate in ("SUM", "AVERAGE"):
        init = "(f64.const 0)"
        combine = "f64.add"
    elif aggregate in ("MIN", "MAX"):
        init = "(f64.const inf)" if aggregate == "MIN" else "(f64.const -inf)"
        combine = "f64.min" if aggregate == "MIN" else "f64.max"
    else:
        raise fail(node.op_type, node.name, f"aggregate_function {aggregate}")
    decode = ""
    if ensemble.uniform_mode is None:
        decode = (
            "(local.set $m (i32.and (i32.shr_u (local.get $f) (i32.const 24)) (i32.const 7)))\n"
            "(local.set $miss (i32.and (i32.shr_u (local.get $f) (i32.const 27)) (i32.const 1)))\n"
            f"(local.set $f (i32.and (local.get $f) (i32.const {_FEATURE_MASK})))\n"
        )
    init_acc = "\n".join(
        f"(f64.store (i32.const {acc + 8 * k}) {init})" for k in range(ensemble.n_targets)
    )
    body = f"""{init_acc}
(local.set $t (i32.const 0))
(loop $trees
  (local.set $n (i32.load offset={ensemble.roots_addr} (local.get $t)))
  (block $leaf
    (loop $walk
      (local.set $f (i32.load (local.get $n)))
      (br_if $leaf (i32.lt_s (local.get $f) (i32.const 0)))
      {decode}(local.set $x (f32.load offset={x.addr} (i32.shl (local.get $f) (i32.const 2))))
      (local.set $n (select (i32.load offset=8 (local.get $n)) (i32.load offset=12 (local.get $n))
        {_condition(ensemble)}))
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
  (br_if $trees (i32.lt_u (local.get $t) (i32.const {ensemble.n_trees * 4}))))
"""
    locals_ = ("(local $t i32) (local $n i32) (local $f i32) (local $x f32) (local $p i32) "
               "(local $e i32) (local $q i32) (local $m i32) (local $miss i32)")
    state.add_kernel(node, body, locals_)
    return acc


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


def _regressor(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    n_targets = int(attrs.get("n_targets", 1))
    if str(attrs.get("post_transform", "NONE")) != "NONE":
        raise fail(node.op_type, node.name, "only post_transform NONE is supported")
    base = _floats(node, attrs, "base_values") or [0.0] * n_targets
    if len(base) != n_targets:
        raise fail(node.op_type, node.name, "base_values must have one value per target")
    aggregate = str(attrs.get("aggregate_function", "SUM"))
    ensemble = _build_tables(state, node, attrs, x, "target", n_targets)
    acc = _walk_kernel(state, node, x, ensemble, aggregate)
    out = state.new_value(node.output[0], n_targets, 2)
    _finish_kernel(state, node, acc, out.addr, ensemble.n_trees, base, aggregate)


def _classifier(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    classes, strings = class_labels(node, dict(attrs))
    n_classes = len(classes)
    post = str(attrs.get("post_transform", "NONE"))
    if post not in TRANSFORMS:
        raise fail(node.op_type, node.name, f"post_transform {post} is not supported")
    base = _floats(node, attrs, "base_values")
    weight_classes = {int(c) for c in attrs.get("class_ids", [])}
    ensemble = _build_tables(state, node, attrs, x, "class", n_classes)
    acc = _walk_kernel(state, node, x, ensemble, "SUM")
    label_type = DType.string if strings else DType.int
    label = state.new_value(node.output[0], 1, 1, label_type, classes)
    probabilities = state.new_value(node.output[1], n_classes, 2, DType.float, classes)

    if n_classes == 2 and weight_classes == {0}:
        if len(base) > 1:
            raise fail(node.op_type, node.name, "binary scores with two base_values")
        score = state.program.slot(1)
        _finish_kernel(state, node, acc, score, ensemble.n_trees, (base or [0.0])[:1], "SUM")
        weights = np.asarray(_floats(node, attrs, "class_weights"))
        _binary_kernel(state, node, score, label.addr, probabilities.addr, post,
                       all_positive=bool(np.all(weights >= 0)))
        return
    if weight_classes != set(range(n_classes)) or (n_classes == 2 and len(base) == 2):
        raise fail(node.op_type, node.name, "this class/weight layout is not supported")
    if base and len(base) != n_classes:
        raise fail(node.op_type, node.name, "base_values must have one value per class")
    scores = state.program.slot(n_classes)
    _finish_kernel(state, node, acc, scores, ensemble.n_trees, base or [0.0] * n_classes, "SUM")
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
    (ML_DOMAIN, "TreeEnsembleRegressor"): _regressor,
    (ML_DOMAIN, "TreeEnsembleClassifier"): _classifier,
}
