"""ai.onnx.ml opset 5 ``TreeEnsemble`` -> the opset 1-3 ``TreeEnsembleRegressor`` form.

The opset 5 operator describes the same trees differently: interior nodes in ``nodes_*``
arrays, leaves in separate ``leaf_*`` arrays, each child reference flagged as a node or a
leaf index, roots listed in ``tree_roots``, enums as integers and splits and weights as
tensors; it has no ``base_values`` (converters add them with a separate ``Add``). This
module rewrites those attributes into the regressor's (tree and node ids, ``LEAF``
nodes, ``target_*`` weights) and hands the node to the regressor lowering, so parsing,
checks, layouts and numerics are shared with the older operators.

Supported: float32 splits and weights, modes BRANCH_LEQ/LT/GTE/GT/EQ/NEQ, aggregate
SUM/AVERAGE/MIN/MAX, post_transform NONE. Refused with ``CompileError``: BRANCH_MEMBER
(set membership), other post-transforms, double or half precision, and references that
do not form trees (out of range, or an interior node reached twice, which would loop).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import fail
from agent.compiler.trees import lower_regressor

_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ")
_MEMBER = 6
_AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")
_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")


def _tree_ensemble(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    post = int(attrs.get("post_transform", 0))
    if post != 0:
        name = _TRANSFORMS[post] if 0 <= post < len(_TRANSFORMS) else str(post)
        raise fail(node.op_type, node.name, f"post_transform {name} is not supported")
    aggregate = int(attrs.get("aggregate_function", 1))
    if not 0 <= aggregate < len(_AGGREGATES):
        raise fail(node.op_type, node.name, f"aggregate_function {aggregate}")
    legacy = regressor_attributes(node, attrs)
    legacy["aggregate_function"] = _AGGREGATES[aggregate]
    legacy["n_targets"] = int(attrs.get("n_targets", 1))
    lower_regressor(state, node, legacy)


def _float32(node: onnx.NodeProto, attrs: Attrs, name: str) -> list[float]:
    values = np.asarray(attrs.get(name, np.zeros(0, np.float32)))
    if values.dtype != np.float32:
        raise fail(node.op_type, node.name, f"{name} must be float32, found {values.dtype}")
    return [float(v) for v in values.reshape(-1)]


def regressor_attributes(node: onnx.NodeProto, attrs: Attrs) -> dict[str, Any]:
    """The ``TreeEnsembleRegressor`` node and target attributes of the same trees. Node
    ids are assigned per tree in breadth-first order (the root is 0); a leaf referenced
    twice becomes two leaf nodes."""
    features = [int(v) for v in attrs.get("nodes_featureids", [])]
    splits = _float32(node, attrs, "nodes_splits")
    modes = [int(v) for v in np.asarray(attrs.get("nodes_modes", [])).reshape(-1)]
    true_ids = [int(v) for v in attrs.get("nodes_truenodeids", [])]
    true_leaf = [bool(v) for v in attrs.get("nodes_trueleafs", [])]
    false_ids = [int(v) for v in attrs.get("nodes_falsenodeids", [])]
    false_leaf = [bool(v) for v in attrs.get("nodes_falseleafs", [])]
    count = len(features)
    missing = [int(v) for v in attrs.get("nodes_missing_value_tracks_true", [])] or [0] * count
    targets = [int(v) for v in attrs.get("leaf_targetids", [])]
    weights = _float32(node, attrs, "leaf_weights")
    if not count or any(
        len(column) != count
        for column in (splits, modes, true_ids, true_leaf, false_ids, false_leaf, missing)
    ):
        raise fail(node.op_type, node.name, "node attributes are missing or of unequal length")
    if len(targets) != len(weights):
        raise fail(node.op_type, node.name, "leaf attributes are of unequal length")
    if _MEMBER in modes:
        raise fail(node.op_type, node.name, "BRANCH_MEMBER (set membership) is not supported")
    if any(not 0 <= m < len(_MODES) for m in modes):
        raise fail(node.op_type, node.name, "unknown node mode")

    out: dict[str, list[Any]] = {
        key: []
        for key in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_modes",
            "nodes_values",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    seen = [False] * count
    for tree, root in enumerate(int(v) for v in attrs.get("tree_roots", [])):
        queue: list[tuple[bool, int]] = [(False, root)]  # (is leaf, index); id = position
        for nid, (is_leaf, index) in enumerate(queue):
            limit = len(weights) if is_leaf else count
            if not 0 <= index < limit:
                raise fail(node.op_type, node.name, "a reference points outside the arrays")
            out["nodes_treeids"].append(tree)
            out["nodes_nodeids"].append(nid)
            if is_leaf:
                for key, value in (
                    ("nodes_featureids", 0),
                    ("nodes_modes", "LEAF"),
                    ("nodes_values", 0.0),
                    ("nodes_truenodeids", 0),
                    ("nodes_falsenodeids", 0),
                    ("nodes_missing_value_tracks_true", 0),
                ):
                    out[key].append(value)
                for key, value in (
                    ("target_treeids", tree),
                    ("target_nodeids", nid),
                    ("target_ids", targets[index]),
                    ("target_weights", weights[index]),
                ):
                    out[key].append(value)
                continue
            if seen[index]:
                raise fail(node.op_type, node.name, "a node is reachable twice (not a tree)")
            seen[index] = True
            out["nodes_featureids"].append(features[index])
            out["nodes_modes"].append(_MODES[modes[index]])
            out["nodes_values"].append(splits[index])
            out["nodes_missing_value_tracks_true"].append(missing[index])
            out["nodes_truenodeids"].append(len(queue))
            queue.append((true_leaf[index], true_ids[index]))
            out["nodes_falsenodeids"].append(len(queue))
            queue.append((false_leaf[index], false_ids[index]))
    return out


LOWERINGS: dict[tuple[str, str], LowerFn] = {
    (ML_DOMAIN, "TreeEnsemble"): _tree_ensemble,
}
