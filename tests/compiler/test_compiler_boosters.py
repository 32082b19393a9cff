"""Gradient-boosting libraries through ``convert.to_onnx_model``: scikit-learn's
HistGradientBoosting (lowered by ``hist_gradient``), XGBoost and LightGBM (onnxmltools).
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
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from agent.compiler.build import build, compile_onnx
from agent.compiler.convert import to_onnx_model
from agent.compiler.hist_gradient import hist_gradient_onnx
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
    "hgb-binary": (lambda: HistGradientBoostingClassifier(max_iter=10, max_depth=3,
                                                          random_state=0), "binary", "sklearn"),
    "hgb-multiclass": (lambda: HistGradientBoostingClassifier(max_iter=6, max_depth=3,
                                                              random_state=0), "wine", "sklearn"),
    "xgb-binary": (lambda: xgboost.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1),
                   "binary", "xgboost"),
    "xgb-multiclass": (lambda: xgboost.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1),
                       "multiclass", "xgboost"),
    "lgbm-binary": (lambda: lightgbm.LGBMClassifier(n_estimators=10, num_leaves=8, n_jobs=1,
                                                    verbose=-1), "binary", "lightgbm"),
    "lgbm-multiclass": (lambda: lightgbm.LGBMClassifier(n_estimators=6, num_leaves=8, n_jobs=1,
                                                        verbose=-1), "wine", "lightgbm"),
}

REGRESSORS: dict[str, tuple[Callable[[], Any], str]] = {
    "hgb": (lambda: HistGradientBoostingRegressor(max_iter=10, max_depth=3, random_state=0),
            "sklearn"),
    "xgb": (lambda: xgboost.XGBRegressor(n_estimators=10, max_depth=3, n_jobs=1), "xgboost"),
    "lgbm": (lambda: lightgbm.LGBMRegressor(n_estimators=10, num_leaves=8, n_jobs=1,
                                            verbose=-1), "lightgbm"),
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
    categorical = _fit(HistGradientBoostingClassifier(max_iter=2, categorical_features=[0]),
                       x, y)
    with pytest.raises(CompileError, match="categorical features"):
        to_onnx_model(categorical, 4)
    poisson = _fit(HistGradientBoostingRegressor(max_iter=2, loss="poisson"), x, y)
    with pytest.raises(CompileError, match="loss 'poisson'"):
        to_onnx_model(poisson, 4)


def test_build_accepts_a_fitted_lightgbm_estimator(tmp_path: Path) -> None:
    reference, x, y = _dataset(tmp_path)
    model = _fit(lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, n_jobs=1, verbose=-1),
                 x.astype(np.float32), y)
    out = build(model, reference=reference, name="fever", version="1.0.0",
                out=tmp_path / "bundle", schema={"features": {"sex": {"levels":
                                                                       ["female", "male"]}}})
    manifest = _manifest(out)
    assert manifest.provenance.source == "lightgbm"
    assert [o.name for o in manifest.outputs] == ["label", "probability_0", "probability_1"]


def test_the_opset_5_tree_ensemble_operator_is_refused_by_name() -> None:
    """ai.onnx.ml opset 5 ``TreeEnsemble`` (no converter in this stack emits it): a
    CompileError naming the operator, never a silently wrong module."""
    node = helper.make_node(
        "TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", name="ensemble",
        aggregate_function=1, post_transform=0, tree_roots=[0], nodes_splits=helper.make_tensor(
            "splits", TensorProto.FLOAT, [1], [0.5]),
        nodes_featureids=[0], nodes_modes=helper.make_tensor("modes", TensorProto.UINT8, [1],
                                                             [0]),
        nodes_truenodeids=[0], nodes_trueleafs=[1], nodes_falsenodeids=[1],
        nodes_falseleafs=[1], leaf_targetids=[0, 0], leaf_weights=helper.make_tensor(
            "weights", TensorProto.FLOAT, [2], [1.0, 2.0]), n_targets=1,
    )
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("ai.onnx.ml", 5)])
    onnx.checker.check_model(model)
    with pytest.raises(CompileError, match=r"unsupported operator ai\.onnx\.ml:TreeEnsemble "):
        compile_onnx(model)
