"""The nodes and leaf weights of an ai.onnx.ml tree ensemble, parsed and checked once,
independent of how the kernels lay them out.

Checks (each a ``CompileError`` naming the node): equal-length attributes, known modes,
unique (tree, node) ids, children inside their own tree, weights only on leaves and only
for known targets, features inside the input width, and that every tree is a tree: no node
is reachable twice, so no layout can loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from agent.compiler.graph import Attrs
from agent.compiler.ir import fail

MODES = {
    "BRANCH_LEQ": 0,
    "BRANCH_LT": 1,
    "BRANCH_GTE": 2,
    "BRANCH_GT": 3,
    "BRANCH_EQ": 4,
    "BRANCH_NEQ": 5,
}
LEAF = -1


@dataclass(frozen=True)
class Forest:
    """Nodes by position; a leaf has mode ``LEAF`` and children -1."""

    features: list[int]
    thresholds: list[float]
    modes: list[int]
    missing_true: list[bool]
    true_child: list[int]
    false_child: list[int]
    leaf_weights: dict[int, list[tuple[int, float]]]
    roots: list[int]
    depth: int
    n_targets: int

    @property
    def uniform_mode(self) -> int | None:
        """The one comparison every branch uses when no branch sends NaN to the true side."""
        branches = [i for i, m in enumerate(self.modes) if m != LEAF]
        kinds = {self.modes[i] for i in branches}
        if any(self.missing_true[i] for i in branches) or len(kinds) > 1:
            return None
        return next(iter(kinds), 0)


def floats(node: onnx.NodeProto, attrs: Attrs, name: str) -> list[float]:
    if name in attrs:
        return [float(v) for v in attrs[name]]
    if f"{name}_as_tensor" in attrs:
        raise fail(node.op_type, node.name, f"{name}_as_tensor (double precision) is not supported")
    return []


def parse_forest(
    node: onnx.NodeProto, attrs: Attrs, prefix: str, n_targets: int, n_features: int
) -> Forest:
    """``prefix`` is ``target`` (regressor) or ``class`` (classifier)."""
    tree_ids = [int(v) for v in attrs.get("nodes_treeids", [])]
    node_ids = [int(v) for v in attrs.get("nodes_nodeids", [])]
    features = [int(v) for v in attrs.get("nodes_featureids", [])]
    thresholds = floats(node, attrs, "nodes_values")
    mode_names = [str(m) for m in attrs.get("nodes_modes", [])]
    true_ids = [int(v) for v in attrs.get("nodes_truenodeids", [])]
    false_ids = [int(v) for v in attrs.get("nodes_falsenodeids", [])]
    count = len(tree_ids)
    missing = [bool(v) for v in attrs.get("nodes_missing_value_tracks_true", [])] or [False] * count
    if not count or any(
        len(column) != count
        for column in (node_ids, features, thresholds, mode_names, true_ids, false_ids, missing)
    ):
        raise fail(node.op_type, node.name, "node attributes are missing or of unequal length")
    modes = []
    for name in mode_names:
        if name != "LEAF" and name not in MODES:
            raise fail(node.op_type, node.name, f"node mode {name}")
        modes.append(LEAF if name == "LEAF" else MODES[name])
    index = {(tree_ids[i], node_ids[i]): i for i in range(count)}
    if len(index) != count:
        raise fail(node.op_type, node.name, "duplicate (tree, node) ids")

    def child(i: int, nid: int) -> int:
        if modes[i] == LEAF:
            return -1
        position = index.get((tree_ids[i], nid))
        if position is None:
            raise fail(node.op_type, node.name, "a branch points to a node that does not exist")
        return position

    true_child = [child(i, true_ids[i]) for i in range(count)]
    false_child = [child(i, false_ids[i]) for i in range(count)]
    for i in range(count):
        if modes[i] != LEAF and not 0 <= features[i] < n_features:
            raise fail(node.op_type, node.name, "a node reads a feature beyond the input width")

    leaf_weights: dict[int, list[tuple[int, float]]] = {}
    weight_columns = [
        [int(v) for v in attrs.get(f"{prefix}_treeids", [])],
        [int(v) for v in attrs.get(f"{prefix}_nodeids", [])],
        [int(v) for v in attrs.get(f"{prefix}_ids", [])],
    ]
    weights = floats(node, attrs, f"{prefix}_weights")
    if any(len(column) != len(weights) for column in weight_columns):
        raise fail(node.op_type, node.name, f"{prefix}_* attributes are of unequal length")
    for tree, nid, target, weight in zip(*weight_columns, weights, strict=True):
        position = index.get((tree, nid))
        if position is None or modes[position] != LEAF:
            raise fail(node.op_type, node.name, "a weight is attached to a node that is not a leaf")
        if not 0 <= target < n_targets:
            raise fail(node.op_type, node.name, "a leaf weight targets an unknown output")
        leaf_weights.setdefault(position, []).append((target, weight))

    roots = []
    for tree in dict.fromkeys(tree_ids):
        if (tree, 0) not in index:
            raise fail(node.op_type, node.name, f"tree {tree} has no node 0")
        roots.append(index[(tree, 0)])
    depth = _check_trees(node, roots, true_child, false_child, count)
    return Forest(
        features,
        thresholds,
        modes,
        missing,
        true_child,
        false_child,
        leaf_weights,
        roots,
        depth,
        n_targets,
    )


def _check_trees(
    node: onnx.NodeProto,
    roots: list[int],
    true_child: list[int],
    false_child: list[int],
    count: int,
) -> int:
    """Refuse shared or cyclic nodes; return the deepest root-to-leaf path (in branches)."""
    seen = [False] * count
    deepest = 0
    for root in roots:
        stack = [(root, 0)]
        while stack:
            position, depth = stack.pop()
            if seen[position]:
                raise fail(node.op_type, node.name, "a node is reachable twice (not a tree)")
            seen[position] = True
            deepest = max(deepest, depth)
            for nxt in (true_child[position], false_child[position]):
                if nxt >= 0:
                    stack.append((nxt, depth + 1))
    return deepest
