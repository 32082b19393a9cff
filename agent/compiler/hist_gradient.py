"""scikit-learn's HistGradientBoosting estimators -> an ai.onnx.ml tree-ensemble graph.

skl2onnx 1.20 cannot convert them under scikit-learn 1.9: the fitted trees hold numpy
``uint32``/``uint8`` fields that reach ``onnx.helper.make_node`` as list items of an
``ints`` attribute, which onnx refuses (binary, multi-class and regressor alike). The
fitted trees are simple, so this module writes the ``TreeEnsembleClassifier`` /
``TreeEnsembleRegressor`` node itself, with plain Python ints, from
``estimator._predictors`` (one list of ``TreePredictor`` per boosting iteration, one
predictor per class) and ``estimator._baseline_prediction``.

Faithfulness:

* scikit-learn routes ``x <= threshold`` (an f64 threshold) left and missing values to the
  side its ``missing_go_to_left`` flag names. The graph compares f32 features against f32
  thresholds (``BRANCH_LEQ``), so each threshold is rounded *down* to the nearest f32: for
  every f32 ``x``, ``x <= t`` holds exactly when ``x <= round_down_f32(t)``, so no branch
  flips. Missing values follow ``nodes_missing_value_tracks_true``.
* Raw score = baseline + sum of leaf values (``base_values`` plus ``SUM``). Binary
  classification is the one-weight-class layout with ``LOGISTIC`` (probabilities
  ``[sigmoid(-s), sigmoid(s)]``, as scikit-learn's ``expit``); multi-class is one class id
  per predictor with ``SOFTMAX``; regression with the squared-error (identity link) loss
  is the plain sum.
* Refused with ``CompileError``: categorical splits (bitsets have no ONNX tree mode) and
  regressor losses with a non-identity link (poisson, gamma), which the tree node cannot
  express.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from agent.compiler.graph import ML_DOMAIN
from agent.errors import CompileError

_IDENTITY_LOSSES = ("squared_error", "absolute_error", "quantile")
_ML_OPSET = 3
_OPSET = 17


def is_hist_gradient_boosting(model: Any) -> bool:
    return type(model).__name__ in (
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
    ) and hasattr(model, "_predictors")


def hist_gradient_onnx(model: Any, n_features: int) -> onnx.ModelProto:
    """The ONNX graph of a fitted HistGradientBoosting estimator, input ``X`` float32
    ``[None, n_features]``; outputs ``label`` and ``probabilities`` (classifier) or
    ``variable`` (regressor)."""
    name = type(model).__name__
    categorical = getattr(model, "is_categorical_", None)
    if categorical is not None and bool(np.any(categorical)):
        raise CompileError(f"{name} with categorical features cannot be lowered to ONNX trees")
    if model.n_features_in_ != n_features:
        raise CompileError(
            f"the model reads {model.n_features_in_} features, the reference has "
            f"{n_features} columns"
        )
    attrs = _forest_attributes(model._predictors)
    baseline = [float(v) for v in np.asarray(model._baseline_prediction).reshape(-1)]
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])
    if hasattr(model, "classes_"):
        node, outputs = _classifier(model, attrs, baseline)
    else:
        loss = getattr(model, "loss", "")
        if loss not in _IDENTITY_LOSSES:
            raise CompileError(f"{name} with loss {loss!r} has a link ONNX trees cannot express")
        node = helper.make_node(
            "TreeEnsembleRegressor",
            ["X"],
            ["variable"],
            domain=ML_DOMAIN,
            n_targets=1,
            aggregate_function="SUM",
            post_transform="NONE",
            base_values=baseline,
            target_ids=attrs.pop("class_ids"),
            target_nodeids=attrs.pop("class_nodeids"),
            target_treeids=attrs.pop("class_treeids"),
            target_weights=attrs.pop("class_weights"),
            **attrs,
        )
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])]
    graph = helper.make_graph([node], name, [x], outputs)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET), helper.make_opsetid(ML_DOMAIN, _ML_OPSET)],
    )
    onnx.checker.check_model(proto)
    return proto


def _classifier(
    model: Any, attrs: dict[str, Any], baseline: list[float]
) -> tuple[onnx.NodeProto, list[onnx.ValueInfoProto]]:
    classes = model.classes_
    binary = len(classes) == 2
    if binary != (model.n_trees_per_iteration_ == 1):
        raise CompileError(f"{type(model).__name__}: unexpected trees per iteration")
    if np.issubdtype(np.asarray(classes).dtype, np.integer):
        labels: dict[str, Any] = {"classlabels_int64s": [int(c) for c in classes]}
        label_type = TensorProto.INT64
    else:
        labels = {"classlabels_strings": [str(c) for c in classes]}
        label_type = TensorProto.STRING
    node = helper.make_node(
        "TreeEnsembleClassifier",
        ["X"],
        ["label", "probabilities"],
        domain=ML_DOMAIN,
        post_transform="LOGISTIC" if binary else "SOFTMAX",
        base_values=baseline,
        **labels,
        **attrs,
    )
    outputs = [
        helper.make_tensor_value_info("label", label_type, [None]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(classes)]),
    ]
    return node, outputs


def _forest_attributes(predictors: list[list[Any]]) -> dict[str, Any]:
    """Node and leaf-weight attributes, trees numbered iteration-major; the predictor's
    position within its iteration is its class (target) id."""
    attrs: dict[str, Any] = {
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
            "class_treeids",
            "class_nodeids",
            "class_ids",
            "class_weights",
        )
    }
    tree = 0
    for iteration in predictors:
        for class_id, predictor in enumerate(iteration):
            for index, record in enumerate(predictor.nodes):
                leaf = bool(record["is_leaf"])
                attrs["nodes_treeids"].append(tree)
                attrs["nodes_nodeids"].append(index)
                attrs["nodes_featureids"].append(0 if leaf else int(record["feature_idx"]))
                attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
                attrs["nodes_values"].append(
                    0.0 if leaf else f32_at_most(float(record["num_threshold"]))
                )
                attrs["nodes_truenodeids"].append(0 if leaf else int(record["left"]))
                attrs["nodes_falsenodeids"].append(0 if leaf else int(record["right"]))
                attrs["nodes_missing_value_tracks_true"].append(
                    0 if leaf else int(bool(record["missing_go_to_left"]))
                )
                if leaf:
                    attrs["class_treeids"].append(tree)
                    attrs["class_nodeids"].append(index)
                    attrs["class_ids"].append(class_id)
                    attrs["class_weights"].append(float(record["value"]))
            tree += 1
    return attrs


def f32_at_most(threshold: float) -> float:
    """The largest f32 not above ``threshold`` (``inf`` stays ``inf``)."""
    rounded = np.float32(threshold)
    if float(rounded) > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)
