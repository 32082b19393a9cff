"""Gradient-boosting libraries through ``convert.to_onnx_model``: scikit-learn's
HistGradientBoosting (lowered by ``hist_gradient``), XGBoost and LightGBM (onnxmltools);
and the ai.onnx.ml opset 5 ``TreeEnsemble`` operator, written with onnx.helper.
Each against onnxruntime on the same ONNX (<= 1e-5 on probabilities, relative to the
output scale on regression scores, zero label flips) and against the library (<= 1e-4)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import onnx
import pytest
import xgboost
from onnx import TensorProto, helper
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)

from agent.compiler.build import build, compile_onnx
from agent.compiler.convert import to_onnx_model
from agent.compiler.hist_gradient import f32_at_most, hist_gradient_onnx
from agent.errors import CompileError
from tests.compiler.compiler_helpers import label_indices, run_compiled, run_onnxruntime
from tests.compiler.test_compiler_build import _dataset, _manifest


def _with_missing(x: np.ndarray) -> np.ndarray:
    """Every 9th value of the first three columns missing: exercises the learnt
    missing-value directions (HistGradientBoosting, XGBoost and LightGBM all learn them)."""
    x = x.astype(np.float32).copy()
    for j in range(3):
        x[j::9, j] = np.nan
    return x


DATA = {
    "binary": load_breast_cancer(return_X_y=True),
    "multiclass": load_iris(return_X_y=True),
    "wine": load_wine(return_X_y=True),
    "regression": load_diabetes(return_X_y=True),
}

CLASSIFIERS: dict[str, tuple[Callable[[], Any], str, str]] = {
    "hgb-binary": (
        lambda: HistGradientBoostingClassifier(max_iter=10, max_depth=3, random_state=0),
        "binary",
        "sklearn",
    ),
    "hgb-multiclass": (
        lambda: HistGradientBoostingClassifier(max_iter=6, max_depth=3, random_state=0),
        "wine",
        "sklearn",
    ),
    "xgb-binary": (
        lambda: xgboost.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1),
        "binary",
        "xgboost",
    ),
    "xgb-multiclass": (
        lambda: xgboost.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1),
        "multiclass",
        "xgboost",
    ),
    "lgbm-binary": (
        lambda: lightgbm.LGBMClassifier(n_estimators=10, num_leaves=8, n_jobs=1, verbose=-1),
        "binary",
        "lightgbm",
    ),
    "lgbm-multiclass": (
        lambda: lightgbm.LGBMClassifier(n_estimators=6, num_leaves=8, n_jobs=1, verbose=-1),
        "wine",
        "lightgbm",
    ),
}

REGRESSORS: dict[str, tuple[Callable[[], Any], str]] = {
    "hgb": (
        lambda: HistGradientBoostingRegressor(max_iter=10, max_depth=3, random_state=0),
        "sklearn",
    ),
    "xgb": (lambda: xgboost.XGBRegressor(n_estimators=10, max_depth=3, n_jobs=1), "xgboost"),
    "lgbm": (
        lambda: lightgbm.LGBMRegressor(n_estimators=10, num_leaves=8, n_jobs=1, verbose=-1),
        "lightgbm",
    ),
}


def _fit(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LightGBM's feature-name UserWarnings
        return estimator.fit(x, y)


def _library(call: Callable[[np.ndarray], Any], x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(call(x))


@pytest.mark.parametrize("case", list(CLASSIFIERS))
def test_booster_classifier_parity(case: str) -> None:
    make, dataset, source = CLASSIFIERS[case]
    x, y = DATA[dataset]
    x = _with_missing(x)
    model = _fit(make(), x, y)
    onx, tag = to_onnx_model(model, x.shape[1])
    assert tag == source
    ours, classes = run_compiled(onx, x)
    label, probabilities = run_onnxruntime(onx, x)
    assert (ours[:, 0] != label_indices(label, classes)).sum() == 0
    assert np.abs(ours[:, 1:] - probabilities).max() <= 1e-5
    assert np.abs(ours[:, 1:] - _library(model.predict_proba, x)).max() <= 1e-4
    predicted = _library(model.predict, x).astype(str)
    assert (np.asarray(classes)[ours[:, 0].astype(int)] != predicted).sum() == 0


@pytest.mark.parametrize("case", list(REGRESSORS))
def test_booster_regressor_parity(case: str) -> None:
    make, source = REGRESSORS[case]
    x, y = DATA["regression"]
    x = _with_missing(x)
    model = _fit(make(), x, y)
    onx, tag = to_onnx_model(model, x.shape[1])
    assert tag == source
    ours, _ = run_compiled(onx, x)
    (reference,) = run_onnxruntime(onx, x)
    scale = max(float(np.abs(reference).max()), 1.0)
    # f32 scores around 150: differences are compared relative to the output scale.
    assert np.abs(ours[:, 0] - reference.reshape(-1)).max() <= 1e-5 * scale
    assert np.abs(ours[:, 0] - _library(model.predict, x)).max() <= 1e-4 * scale


def test_hist_gradient_thresholds_never_flip_a_float32_branch() -> None:
    """Adjacent f32 values: scikit-learn splits at their f64 midpoint, which rounds to the
    upper (even) one when rounded to nearest and would send it the wrong way; rounding
    down keeps scikit-learn's f64 comparison exact."""
    values = [np.float32(1.0)]
    for _ in range(7):
        values.append(np.nextafter(values[-1], np.float32(2.0)))
    x = np.array(values * 50, dtype=np.float32).reshape(-1, 1)
    y = (np.arange(len(x)) % 8 >= 4).astype(int)  # odd/even f32 neighbours
    model = _fit(HistGradientBoostingClassifier(max_iter=3, random_state=0), x, y)
    ours, classes = run_compiled(hist_gradient_onnx(model, 1), x)
    assert np.abs(ours[:, 1:] - model.predict_proba(x)).max() <= 1e-4
    assert (np.asarray(classes)[ours[:, 0].astype(int)] != model.predict(x).astype(str)).sum() == 0


def test_hist_gradient_refuses_categorical_splits_and_log_links() -> None:
    x, y = DATA["multiclass"]
    x = x.astype(np.float32).copy()
    x[:, 0] = np.digitize(x[:, 0], [5, 6])
    categorical = _fit(HistGradientBoostingClassifier(max_iter=2, categorical_features=[0]), x, y)
    with pytest.raises(CompileError, match="categorical features"):
        to_onnx_model(categorical, 4)
    poisson = _fit(HistGradientBoostingRegressor(max_iter=2, loss="poisson"), x, y)
    with pytest.raises(CompileError, match="loss 'poisson'"):
        to_onnx_model(poisson, 4)


def test_build_accepts_a_fitted_lightgbm_estimator(tmp_path: Path) -> None:
    reference, x, y = _dataset(tmp_path)
    model = _fit(
        lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, n_jobs=1, verbose=-1),
        x.astype(np.float32),
        y,
    )
    out = build(
        model,
        reference=reference,
        name="fever",
        version="1.0.0",
        out=tmp_path / "bundle",
        schema={"features": {"sex": {"levels": ["female", "male"]}}},
    )
    manifest = _manifest(out)
    assert manifest.provenance.source == "lightgbm"
    assert [o.name for o in manifest.outputs] == ["label", "probability_0", "probability_1"]


def _tree_ensemble(
    models: list[Any], n_features: int, aggregate: int, post_transform: int = 0
) -> onnx.ModelProto:
    """An ai.onnx.ml opset 5 ``TreeEnsemble`` written with onnx.helper from fitted
    scikit-learn trees: the trees of ``models[k]`` feed target ``k``; a GradientBoosting
    model's trees are scaled by its learning rate and its initial prediction added by an
    ``Add`` node, as converters do."""
    nodes: dict[str, list[Any]] = {
        key: []
        for key in ("features", "splits", "modes", "true", "true_leaf", "false", "false_leaf")
    }
    roots: list[int] = []
    leaf_targets: list[int] = []
    leaf_weights: list[float] = []
    base = np.zeros(len(models), dtype=np.float32)
    for target, model in enumerate(models):
        boosted = hasattr(model, "init_")
        scale = model.learning_rate if boosted else 1.0
        if boosted:
            base[target] = float(model.init_.predict(np.zeros((1, n_features)))[0])
        estimators = model.estimators_.reshape(-1) if boosted else model.estimators_
        for estimator in estimators:
            tree = estimator.tree_
            interior = [i for i in range(tree.node_count) if tree.children_left[i] >= 0]
            leaves = [i for i in range(tree.node_count) if tree.children_left[i] < 0]
            position = {i: len(nodes["features"]) + k for k, i in enumerate(interior)}
            leaf_position = {i: len(leaf_weights) + k for k, i in enumerate(leaves)}
            roots.append(position[0])
            for i in interior:
                nodes["features"].append(int(tree.feature[i]))
                nodes["splits"].append(f32_at_most(float(tree.threshold[i])))
                nodes["modes"].append(0)  # BRANCH_LEQ
                for side, child in (
                    ("true", tree.children_left[i]),
                    ("false", tree.children_right[i]),
                ):
                    is_leaf = child in leaf_position
                    nodes[side].append(leaf_position[child] if is_leaf else position[child])
                    nodes[f"{side}_leaf"].append(int(is_leaf))
            for i in leaves:
                leaf_targets.append(target)
                leaf_weights.append(float(tree.value[i].reshape(-1)[0]) * scale)
    ensemble = helper.make_node(
        "TreeEnsemble",
        ["X"],
        ["raw"],
        domain="ai.onnx.ml",
        name="ensemble",
        n_targets=len(models),
        aggregate_function=aggregate,
        post_transform=post_transform,
        tree_roots=roots,
        nodes_featureids=nodes["features"],
        nodes_splits=helper.make_tensor(
            "splits", TensorProto.FLOAT, [len(nodes["splits"])], nodes["splits"]
        ),
        nodes_modes=helper.make_tensor(
            "modes", TensorProto.UINT8, [len(nodes["modes"])], nodes["modes"]
        ),
        nodes_truenodeids=nodes["true"],
        nodes_trueleafs=nodes["true_leaf"],
        nodes_falsenodeids=nodes["false"],
        nodes_falseleafs=nodes["false_leaf"],
        leaf_targetids=leaf_targets,
        leaf_weights=helper.make_tensor(
            "weights", TensorProto.FLOAT, [len(leaf_weights)], leaf_weights
        ),
    )
    add = helper.make_node("Add", ["raw", "base"], ["Y"])
    graph = helper.make_graph(
        [ensemble, add],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, len(models)])],
        initializer=[onnx.numpy_helper.from_array(base, "base")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
    )
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("aggregate", [1, 0, 2, 3])  # SUM, AVERAGE, MIN, MAX
def test_the_opset_5_tree_ensemble_matches_onnxruntime(aggregate: int) -> None:
    x, y = DATA["regression"]
    x = _with_missing(x)
    boosted = _fit(
        GradientBoostingRegressor(n_estimators=8, max_depth=3, random_state=0), np.nan_to_num(x), y
    )
    forest = _fit(
        RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0), np.nan_to_num(x), y
    )
    model = _tree_ensemble([boosted, forest], x.shape[1], aggregate)
    ours, _ = run_compiled(model, x)
    (reference,) = run_onnxruntime(model, x)
    scale = max(float(np.abs(reference).max()), 1.0)
    assert np.abs(ours - reference).max() <= 1e-5 * scale
    if aggregate == 1:
        clean = np.nan_to_num(x)
        ours, _ = run_compiled(model, clean)
        library = np.column_stack([boosted.predict(clean), forest.predict(clean) * 4])
        assert np.abs(ours - library).max() <= 1e-4 * scale


def test_the_opset_5_tree_ensemble_refuses_what_it_cannot_honour() -> None:
    x, y = DATA["regression"]
    boosted = _fit(
        GradientBoostingRegressor(n_estimators=2, max_depth=2, random_state=0),
        x.astype(np.float32),
        y,
    )
    with pytest.raises(CompileError, match="post_transform SOFTMAX "):
        compile_onnx(_tree_ensemble([boosted], x.shape[1], 1, post_transform=1))
    member = _tree_ensemble([boosted], x.shape[1], 1)
    attribute = next(a for a in member.graph.node[0].attribute if a.name == "nodes_modes")
    attribute.t.CopyFrom(helper.make_tensor("modes", TensorProto.UINT8, [6], [6] * 6))
    with pytest.raises(CompileError, match="BRANCH_MEMBER"):
        compile_onnx(member)
    looped = _tree_ensemble([boosted], x.shape[1], 1)
    for attribute in looped.graph.node[0].attribute:
        if attribute.name in ("nodes_truenodeids", "nodes_trueleafs"):
            del attribute.ints[:]
            attribute.ints.extend([0] * 6)  # every true branch back to the root
    with pytest.raises(CompileError, match="reachable twice"):
        compile_onnx(looped)
