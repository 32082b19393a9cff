"""What a bundle needs to explain its predictions (``explain.json``, see
``agent.bundle.explain``), read from the fitted estimator, and checked before it is written.

Exact and cheap contributions exist for two families, and only they get the file:

* tree ensembles of scikit-learn (decision trees, random and extra forests, gradient
  boosting, HistGradientBoosting), XGBoost and LightGBM (binary logistic, squared error):
  each tree's nodes with their training covers (``weighted_n_node_samples``,
  HistGradientBoosting's ``count``, XGBoost's ``sum_hessian``, LightGBM's data counts), for
  TreeSHAP. A forest's
  leaves carry the 1/n of its average, boosting's the learning rate, and boosting's initial
  score is the ``offset``; a forest or tree classifier is explained in probability, boosting
  in log-odds;
* linear models (``LogisticRegression`` in log-odds, linear regressors in value), bare or
  after ``StandardScaler`` steps, which fold into the coefficients: ``coef / scale``.

Classifiers must be binary and regressors single-output (one risk output). Anything else
(calibration, SVMs, k-NN, MLPs, ONNX input, multi-class) gets no file
and ``unavailable_reason`` says why; the agent then answers that contributions are not
available. Covers and thresholds come from the estimator because ONNX tree nodes carry no
covers.

``check_identity`` runs the agent's own pure-Python explainer on the reference rows: base
plus contributions, through the link, must give the compiled module's output, or the build
fails (a file the compiler cannot vouch for is never written).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agent.bundle.explain import ExplainDocument, LinearModel, Space, TreeModel, TreeNodes
from agent.bundle.manifest import OutputKind, OutputSpec
from agent.contributions import Explainer, logistic
from agent.errors import CompileError

_FORESTS = {
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
}
_SINGLE_TREES = {"DecisionTreeClassifier", "DecisionTreeRegressor"}
_BOOSTING = {"GradientBoostingClassifier", "GradientBoostingRegressor"}
_HIST = {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}
_XGBOOST = {"XGBClassifier", "XGBRegressor"}
_XGBOOST_OBJECTIVES = ("binary:logistic", "reg:squarederror")
_LIGHTGBM = {"LGBMClassifier", "LGBMRegressor"}
_LIGHTGBM_OBJECTIVES = ("binary", "regression")
_LINEAR_CLASSIFIERS = {"LogisticRegression", "LogisticRegressionCV"}
_LINEAR_REGRESSORS = {
    "LinearRegression",
    "Ridge",
    "RidgeCV",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "BayesianRidge",
    "HuberRegressor",
}
IDENTITY_TOLERANCE = 1e-4  # the library check's bound: the module computes in float32
_CHECK_ROWS = 256  # reference rows the identity is checked on


def explain_document(
    model: Any, outputs: Sequence[OutputSpec], reference: np.ndarray
) -> ExplainDocument | str:
    """The explain document for a fitted estimator whose module has ``outputs``, or why
    there is none. ``reference`` holds the imputed reference rows, in model input order."""
    scalers: list[Any] = []
    estimator = model
    if isinstance(getattr(model, "steps", None), list):
        *before, (_, estimator) = model.steps
        scalers = [step for _, step in before]
    name = type(estimator).__name__
    classes = getattr(estimator, "classes_", None)
    if classes is not None and len(classes) != 2:
        return f"{name} has {len(classes)} classes; contributions explain binary classifiers"
    output = _explained_output(outputs, classifier=classes is not None)
    if output is None:
        return "the model has no single risk output to explain"
    if name in _LINEAR_CLASSIFIERS | _LINEAR_REGRESSORS:
        if not all(type(s).__name__ == "StandardScaler" for s in scalers):
            return "contributions of a linear model follow only StandardScaler steps"
        space: Space = "log-odds" if name in _LINEAR_CLASSIFIERS else "value"
        linear = _linear(estimator, scalers, reference)
        if linear is None:
            return f"{name} has more than one output"
        return ExplainDocument(output=output, space=space, model=linear)
    if scalers:
        return f"contributions of {name} are computed for the bare estimator, not a pipeline"
    trees = _trees(estimator, name, reference)
    if trees is None:
        return f"contributions are not available for {name}"
    if isinstance(trees, str):
        return trees
    if classes is None:
        space = "value"
    else:  # boosting sums margins; a forest or a tree averages probabilities
        space = "log-odds" if name in _BOOSTING | _HIST | _XGBOOST | _LIGHTGBM else "probability"
    return ExplainDocument(output=output, space=space, model=trees)


def _explained_output(outputs: Sequence[OutputSpec], *, classifier: bool) -> str | None:
    """A binary classifier's last probability (the positive class, as the agent's risk
    output defaults to), a regressor's one score."""
    kind = OutputKind.probability if classifier else OutputKind.score
    candidates = [o.name for o in outputs if o.kind is kind]
    if classifier and len(candidates) == 2:
        return candidates[-1]
    return candidates[0] if not classifier and len(candidates) == 1 else None


def _linear(estimator: Any, scalers: Sequence[Any], reference: np.ndarray) -> LinearModel | None:
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] != 1:
        return None
    coef = coef.reshape(-1)
    intercept = float(np.asarray(estimator.intercept_, dtype=np.float64).reshape(-1)[0])
    for scaler in reversed(scalers):  # x' = (x - mean) / scale, innermost last
        mean = np.asarray(
            scaler.mean_ if scaler.mean_ is not None else np.zeros_like(coef), np.float64
        )
        scale = np.asarray(
            scaler.scale_ if scaler.scale_ is not None else np.ones_like(coef), np.float64
        )
        coef = coef / scale
        intercept -= float(np.dot(coef, mean))
    return LinearModel(
        intercept=intercept,
        coefficients=[float(c) for c in coef],
        means=[float(m) for m in reference.mean(axis=0)],
    )


def _trees(estimator: Any, name: str, reference: np.ndarray) -> TreeModel | str | None:
    classifier = hasattr(estimator, "classes_")
    if name in _SINGLE_TREES:
        return TreeModel(trees=[_sklearn_tree(estimator.tree_, 1.0, classifier=classifier)])
    if name in _FORESTS:
        weight = 1.0 / len(estimator.estimators_)
        return TreeModel(
            trees=[
                _sklearn_tree(e.tree_, weight, classifier=classifier) for e in estimator.estimators_
            ]
        )
    if name in _BOOSTING:
        rate = float(estimator.learning_rate)
        stages = [row[0] for row in estimator.estimators_]
        rows = reference[:_CHECK_ROWS]
        with warnings.catch_warnings():
            # "X does not have valid feature names": the rows are in the model's order
            warnings.simplefilter("ignore", UserWarning)
            raw = estimator.decision_function(rows) if classifier else estimator.predict(rows)
        sums = rate * np.sum([s.predict(rows) for s in stages], axis=0)
        offsets = np.asarray(raw, np.float64).reshape(-1) - sums
        if np.ptp(offsets) > 1e-9 * max(1.0, float(np.abs(offsets).max())):
            return f"{name}'s init estimator does not give a constant initial score"
        return TreeModel(
            offset=float(offsets.mean()),
            trees=[_sklearn_tree(s.tree_, rate, classifier=False) for s in stages],
        )
    if name in _HIST:
        predictors = estimator._predictors
        if any(len(per_iteration) != 1 for per_iteration in predictors):
            return f"{name} has more than one tree per iteration"
        if any(p[0].nodes["is_categorical"].any() for p in predictors):
            return f"{name} has categorical splits"
        return TreeModel(
            offset=float(np.asarray(estimator._baseline_prediction).reshape(-1)[0]),
            trees=[_hist_tree(p[0].nodes) for p in predictors],
        )
    if name in _XGBOOST:
        return _xgboost(estimator)
    if name in _LIGHTGBM:
        return _lightgbm(estimator)
    return None


def _lightgbm(estimator: Any) -> TreeModel | str:
    """A LightGBM model from ``dump_model()``: covers are the nodes' data counts (as
    ``shap`` reads them), a one-leaf tree is a constant added to the offset. A missing value
    goes where LightGBM sends it: the default side for ``NaN`` missing types, the side of
    0.0 for ``None`` (NaN is read as zero); ``Zero`` only when zero's side is the default."""
    dump = estimator.booster_.dump_model()
    objective = str(dump["objective"]).split()[0]
    if objective not in _LIGHTGBM_OBJECTIVES or dump["num_tree_per_iteration"] != 1:
        return f"contributions are not available for LightGBM objective {objective}"
    if dump.get("average_output"):
        return "contributions are not available for LightGBM's random forest mode"
    offset = 0.0
    trees = []
    for info in dump["tree_info"]:
        root = info["tree_structure"]
        if "split_index" not in root:
            offset += float(root["leaf_value"])
            continue
        tree = _lightgbm_tree(root)
        if isinstance(tree, str):
            return tree
        trees.append(tree)
    return TreeModel(offset=offset, trees=trees)


def _lightgbm_tree(root: dict[str, Any]) -> TreeNodes | str:
    order: list[dict[str, Any]] = []
    pending = [root]
    while pending:  # pre-order: children after their parent
        node = pending.pop()
        order.append(node)
        if "split_index" in node:
            pending += [node["right_child"], node["left_child"]]
    index = {id(node): i for i, node in enumerate(order)}
    splits = [node for node in order if "split_index" in node]
    if any(
        not isinstance(n["threshold"], int | float) or n["decision_type"] != "<=" for n in splits
    ):
        return "contributions are not available for LightGBM categorical splits"
    missing_left = []
    for node in order:
        if "split_index" not in node:
            missing_left.append(False)
            continue
        zero_left = node["threshold"] >= 0.0
        if node["missing_type"] == "Zero" and zero_left != node["default_left"]:
            return "contributions are not available for LightGBM zero-as-missing splits"
        none = node["missing_type"] == "None"
        missing_left.append(zero_left if none else bool(node["default_left"]))
    is_split = ["split_index" in node for node in order]
    return _nodes(
        leaf=np.asarray([not s for s in is_split]),
        feature=[node.get("split_feature", -1) for node in order],
        threshold=[node.get("threshold", 0.0) for node in order],
        left=[
            index[id(node["left_child"])] if s else -1
            for node, s in zip(order, is_split, strict=True)
        ],
        right=[
            index[id(node["right_child"])] if s else -1
            for node, s in zip(order, is_split, strict=True)
        ],
        missing_left=missing_left,
        cover=[
            node["internal_count"] if s else node["leaf_count"]
            for node, s in zip(order, is_split, strict=True)
        ],
        value=[node.get("leaf_value", 0.0) for node in order],
    )


def _xgboost(estimator: Any) -> TreeModel | str:
    """An XGBoost gbtree model from its exact JSON form (``save_raw("json")``): covers are
    the nodes' ``sum_hessian``, the offset the margin of ``base_score``. XGBoost sends a row
    left when ``x < split`` (float32): for float32 inputs that is ``x <= `` the next float32
    below ``split``, which is the threshold written here."""
    learner = json.loads(bytes(estimator.get_booster().save_raw("json")))["learner"]
    objective = learner["objective"]["name"]
    if objective not in _XGBOOST_OBJECTIVES or learner["gradient_booster"]["name"] != "gbtree":
        return f"contributions are not available for XGBoost objective {objective}"
    base = float(str(learner["learner_model_param"]["base_score"]).strip("[]"))
    offset = math.log(base / (1 - base)) if objective == "binary:logistic" else base
    trees = learner["gradient_booster"]["model"]["trees"]
    if any(kind != 0 for tree in trees for kind in tree["split_type"]):
        return "contributions are not available for XGBoost categorical splits"
    return TreeModel(offset=offset, trees=[_xgboost_tree(tree) for tree in trees])


def _xgboost_tree(tree: dict[str, Any]) -> TreeNodes:
    below = np.nextafter(np.asarray(tree["split_conditions"], np.float32), np.float32(-np.inf))
    return _nodes(
        leaf=np.asarray(tree["left_children"]) == -1,
        feature=tree["split_indices"],
        threshold=below,
        left=tree["left_children"],
        right=tree["right_children"],
        missing_left=tree["default_left"],
        cover=tree["sum_hessian"],
        value=tree["split_conditions"],  # a leaf's value, in XGBoost's JSON
    )


def _sklearn_tree(tree: Any, weight: float, *, classifier: bool) -> TreeNodes:
    """A scikit-learn ``Tree``: a classifier's leaf value is its fraction of the positive
    class (scikit-learn >= 1.4 stores fractions), a regressor's its value; times ``weight``."""
    values = tree.value[:, 0, 1] if classifier else tree.value[:, 0, 0]
    return _nodes(
        leaf=tree.children_left == -1,
        feature=tree.feature,
        threshold=tree.threshold,
        left=tree.children_left,
        right=tree.children_right,
        missing_left=getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=bool)),
        cover=tree.weighted_n_node_samples,
        value=values * weight,
    )


def _hist_tree(nodes: np.ndarray) -> TreeNodes:
    """A HistGradientBoosting predictor's nodes (leaf values already shrunk by the
    learning rate; ``left``/``right`` are 0 at a leaf)."""
    return _nodes(
        leaf=nodes["is_leaf"].astype(bool),
        feature=nodes["feature_idx"],
        threshold=nodes["num_threshold"],
        left=nodes["left"],
        right=nodes["right"],
        missing_left=nodes["missing_go_to_left"],
        cover=nodes["count"],
        value=nodes["value"],
    )


def _nodes(
    *,
    leaf: np.ndarray,
    feature: Any,
    threshold: Any,
    left: Any,
    right: Any,
    missing_left: Any,
    cover: Any,
    value: Any,
) -> TreeNodes:
    """Per-node arrays of any library as ``TreeNodes``: -1 for a leaf's feature and
    children, 0 for a leaf's threshold and a split's value."""
    leaves = [bool(x) for x in leaf]

    def at_splits(column: Any, convert: Callable[[Any], Any], at_leaf: Any) -> list[Any]:
        return [
            at_leaf if is_leaf else convert(x) for x, is_leaf in zip(column, leaves, strict=True)
        ]

    return TreeNodes(
        feature=at_splits(feature, int, -1),
        threshold=at_splits(threshold, _finite, 0.0),
        left=at_splits(left, int, -1),
        right=at_splits(right, int, -1),
        missing_left=[bool(m) for m in missing_left],
        cover=[float(c) for c in cover],
        value=[float(v) if is_leaf else 0.0 for v, is_leaf in zip(value, leaves, strict=True)],
    )


def _finite(threshold: float) -> float:
    """A threshold JSON can hold: HistGradientBoosting splits "every value left, missing
    right" at +inf, which the largest double stands for (every finite input is <= it)."""
    return max(-sys.float_info.max, min(float(threshold), sys.float_info.max))


def check_adds_up(
    document: ExplainDocument,
    features: Sequence[str],
    output_index: int,
    rows: np.ndarray,
    predictions: np.ndarray,
) -> None:
    """``CompileError`` unless base plus contributions, through the link, is the module's
    output (``predictions[:, output_index]``) on the first reference rows."""
    explainer = Explainer(document, features)
    worst = 0.0
    for row, predicted in zip(
        rows[:_CHECK_ROWS], predictions[:_CHECK_ROWS, output_index], strict=True
    ):
        explained = explainer.contributions([float(x) for x in row])
        total = explained.base + math.fsum(v for _, v in explained.values)
        if document.space == "log-odds":
            total = logistic(total)
        worst = max(worst, abs(total - float(predicted)) / max(1.0, abs(float(predicted))))
    if not worst <= IDENTITY_TOLERANCE:
        raise CompileError(
            f"internal error: contributions do not add up to the module's output "
            f"(off by {worst:.2g} on the reference rows)"
        )
