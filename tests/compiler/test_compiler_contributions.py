"""Per-feature contributions (docs/explain.md): the bundle's ``explain.json`` and the
agent's pure-Python TreeSHAP / linear explainer, checked against the ``shap`` package
within 1e-5, against a brute-force Shapley computation, and for the identity that makes
them worth reading: base value plus contributions is the model's own output (log-odds for
boosting and logistic models), on real scikit-learn models and public datasets."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier, XGBRegressor

import agent
from agent.bundle.explain import EXPLAIN_FILE, TreeNodes, parse_explain
from agent.bundle.manifest import BundleManifest
from agent.contributions import Explainer, logistic
from agent.errors import BundleError, DigestMismatch
from agent.limits import Limits

shap = pytest.importorskip("shap")
TOLERANCE = 1e-5


def _f32(frame: pd.DataFrame) -> pd.DataFrame:
    """The values the module reads (float32), as float64 for scikit-learn and shap."""
    return frame.astype(np.float32).astype(np.float64)


def _breast_cancer() -> tuple[pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True)
    x = _f32(data.data.iloc[:, :10])
    x.columns = [c.replace(" ", "_") for c in x.columns]
    return x, data.target


def _diabetes() -> tuple[pd.DataFrame, pd.Series]:
    data = load_diabetes(as_frame=True, scaled=False)
    return _f32(data.data), data.target


def _build(model: Any, x: pd.DataFrame, folder: Path) -> Path:
    x.to_csv(folder / "reference.csv", index=False)
    return agent.build(
        model, reference=folder / "reference.csv", name="m", version="1.0.0", out=folder / "b"
    )


def _raw(model: Any, x: pd.DataFrame) -> np.ndarray:
    """The model's output in the explained space, from the library itself."""
    if isinstance(model, XGBClassifier):
        return np.asarray(model.predict(x, output_margin=True))
    if isinstance(model, LGBMClassifier):
        return np.asarray(model.predict(x, raw_score=True))
    if isinstance(model, GradientBoostingClassifier | HistGradientBoostingClassifier):
        return np.asarray(model.decision_function(x))
    if hasattr(model, "steps") and hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x))
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(x)[:, 1])
    return np.asarray(model.predict(x))


TREE_CASES = {
    "gradient_boosting_classifier": (
        lambda: GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0),
        _breast_cancer,
    ),
    "random_forest_classifier": (
        lambda: RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0),
        _breast_cancer,
    ),
    "decision_tree_classifier": (
        lambda: DecisionTreeClassifier(max_depth=5, random_state=0),
        _breast_cancer,
    ),
    "hist_gradient_boosting_classifier": (
        lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0),
        _breast_cancer,
    ),
    "random_forest_regressor": (
        lambda: RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0),
        _diabetes,
    ),
    "extra_trees_regressor": (
        lambda: ExtraTreesRegressor(n_estimators=20, max_depth=6, random_state=0),
        _diabetes,
    ),
    "gradient_boosting_regressor": (
        lambda: GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0),
        _diabetes,
    ),
    "xgboost_classifier": (
        lambda: XGBClassifier(n_estimators=40, max_depth=4, random_state=0),
        _breast_cancer,
    ),
    "lightgbm_classifier": (
        lambda: LGBMClassifier(n_estimators=40, num_leaves=15, random_state=0, verbose=-1),
        _breast_cancer,
    ),
    "lightgbm_regressor": (
        lambda: LGBMRegressor(n_estimators=40, num_leaves=15, random_state=0, verbose=-1),
        _diabetes,
    ),
    "xgboost_regressor": (
        lambda: XGBRegressor(n_estimators=40, max_depth=4, random_state=0),
        _diabetes,
    ),
}


@pytest.mark.parametrize("case", sorted(TREE_CASES))
def test_tree_contributions_match_shap_and_add_up_to_the_models_output(
    case: str, tmp_path: Path
) -> None:
    make, dataset = TREE_CASES[case]
    x, y = dataset()
    model = make().fit(x, y)
    bundle = _build(model, x, tmp_path)
    loaded = agent.load(bundle)
    rows = x.iloc[:60]
    mine = loaded.explain(rows)
    contributions = mine[[f"contribution_{c}" for c in x.columns]].to_numpy()
    explainer = shap.TreeExplainer(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # shap's note on LightGBM's output shape
        expected = np.asarray(explainer.shap_values(rows))
    if expected.ndim == 3:  # a classifier's values per class: the positive one
        expected = expected[:, :, 1]
    base = np.asarray(explainer.expected_value).reshape(-1)[-1]
    raw = _raw(model, rows)
    bound = TOLERANCE * max(1.0, float(np.abs(raw).max()))  # x the scale of a regressor
    assert np.abs(contributions - expected).max() <= bound
    assert np.abs(mine["contribution_base"].to_numpy() - base).max() <= bound
    total = contributions.sum(axis=1) + mine["contribution_base"].to_numpy()
    assert np.abs(total - raw).max() <= bound
    # and the module's own output is that total through the link
    document = json.loads((bundle / EXPLAIN_FILE).read_bytes())
    scored = loaded.predict(rows)[document["output"]].to_numpy()
    through_link = [logistic(t) for t in total] if document["space"] == "log-odds" else total
    assert np.abs(np.asarray(through_link) - scored).max() <= 1e-4 * max(1.0, np.abs(scored).max())


@pytest.mark.parametrize(
    "make",
    [
        lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0),
        lambda: LGBMClassifier(n_estimators=30, num_leaves=15, random_state=0, verbose=-1),
    ],
    ids=["hist_gradient_boosting", "lightgbm"],
)
def test_missing_values_follow_the_learnt_direction_in_contributions(
    make: Any, tmp_path: Path
) -> None:
    x, y = _breast_cancer()
    x = x.copy()
    x.iloc[::5, 1] = np.nan
    x.iloc[::7, 4] = np.nan
    model = make().fit(x, y)
    loaded = agent.load(_build(model, x, tmp_path))
    rows = x.iloc[:70]
    mine = loaded.explain(rows)
    contributions = mine[[f"contribution_{c}" for c in x.columns]].to_numpy()
    assert np.isnan(rows.to_numpy()).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # shap's note on LightGBM's output shape
        expected = np.asarray(shap.TreeExplainer(model).shap_values(rows))
    assert np.abs(contributions - expected).max() <= TOLERANCE
    total = contributions.sum(axis=1) + mine["contribution_base"].to_numpy()
    assert np.abs(total - _raw(model, rows)).max() <= TOLERANCE


@pytest.mark.parametrize("scaled", [False, True])
def test_logistic_contributions_are_exact_in_log_odds(scaled: bool, tmp_path: Path) -> None:
    x, y = _breast_cancer()
    model: Any = (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        if scaled
        else LogisticRegression(max_iter=5000)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes on unscaled data
        model.fit(x, y)
    loaded = agent.load(_build(model, x, tmp_path))
    rows = x.iloc[:80]
    mine = loaded.explain(rows)
    contributions = mine[[f"contribution_{c}" for c in x.columns]].to_numpy()
    estimator = model[-1] if scaled else model
    inputs = model[0].transform(x) if scaled else x.to_numpy()
    masker = shap.maskers.Independent(inputs, max_samples=len(inputs))
    linear = shap.LinearExplainer(estimator, masker)
    expected = linear.shap_values(model[0].transform(rows) if scaled else rows.to_numpy())
    assert np.abs(contributions - expected).max() <= TOLERANCE
    assert abs(mine["contribution_base"].iloc[0] - float(linear.expected_value)) <= TOLERANCE
    total = contributions.sum(axis=1) + mine["contribution_base"].to_numpy()
    assert np.abs(total - model.decision_function(rows)).max() <= TOLERANCE


def test_linear_regression_contributions_add_up_to_the_prediction(tmp_path: Path) -> None:
    x, y = _diabetes()
    model = LinearRegression().fit(x, y)
    loaded = agent.load(_build(model, x, tmp_path))
    [explained] = loaded.explain([x.iloc[0].tolist()])
    assert explained.space == "value" and [n for n, _ in explained.values] == list(x.columns)
    total = explained.base + math.fsum(v for _, v in explained.values)
    assert total == pytest.approx(float(model.predict(x.iloc[:1])[0]), abs=1e-6)
    assert explained.base == pytest.approx(float(model.predict(x).mean()), abs=1e-6)


def _path_dependent(tree: TreeNodes, row: list[float], known: set[int]) -> float:
    """E[f(x) | x_S], the conditional expectation TreeSHAP explains: follow the row on the
    known features, average the children by cover on the others."""

    def walk(node: int) -> float:
        if tree.left[node] == -1:
            return tree.value[node]
        left, right = tree.left[node], tree.right[node]
        feature = tree.feature[node]
        if feature in known:
            return walk(left if row[feature] <= tree.threshold[node] else right)
        cover = tree.cover[left] + tree.cover[right]
        return (tree.cover[left] * walk(left) + tree.cover[right] * walk(right)) / cover

    return walk(0)


def test_tree_shap_equals_a_brute_force_shapley_computation(tmp_path: Path) -> None:
    """Shapley values by their definition (every coalition of 5 features), independent of
    shap: repeated splits on one feature and deep paths exercise unwinding."""
    data = load_iris(as_frame=True)
    x = _f32(data.data)
    x["noise"] = np.random.default_rng(0).normal(size=len(x)).astype(np.float32)
    y = (data.target == 2).astype(int)
    model = GradientBoostingClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, y)
    bundle = _build(model, x, tmp_path)
    manifest = BundleManifest.model_validate_json((bundle / "manifest.json").read_bytes())
    document = parse_explain((bundle / EXPLAIN_FILE).read_bytes(), manifest, Limits())
    explainer = Explainer(document, manifest.feature_names())
    trees = document.model.trees  # type: ignore[union-attr]
    n = x.shape[1]
    for row in x.to_numpy()[[0, 60, 120, 149]].tolist():

        def value(known: set[int], row: list[float] = row) -> float:
            return sum(_path_dependent(t, row, known) for t in trees)

        brute = [0.0] * n
        for i in range(n):
            others = [j for j in range(n) if j != i]
            for size in range(n):
                for subset in itertools.combinations(others, size):
                    weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                    brute[i] += weight * (value({*subset, i}) - value(set(subset)))
        mine = [v for _, v in explainer.contributions(row).values]
        assert mine == pytest.approx(brute, abs=1e-9)


def test_a_model_without_exact_contributions_gets_no_file_and_says_so(tmp_path: Path) -> None:
    x, y = _breast_cancer()
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5)).fit(x, y)
    bundle = _build(model, x, tmp_path)
    assert not (bundle / EXPLAIN_FILE).exists()
    loaded = agent.load(bundle)
    with pytest.raises(BundleError, match="no contribution data"):
        loaded.explain(x.iloc[:2])


def test_a_changed_explain_file_is_refused(tmp_path: Path) -> None:
    x, y = _breast_cancer()
    bundle = _build(DecisionTreeClassifier(max_depth=3).fit(x, y), x, tmp_path)
    document = json.loads((bundle / EXPLAIN_FILE).read_bytes())
    document["model"]["trees"][0]["value"][-1] += 1.0
    (bundle / EXPLAIN_FILE).write_text(json.dumps(document))
    with pytest.raises(DigestMismatch, match=EXPLAIN_FILE):
        agent.load(bundle)


def test_a_malformed_tree_is_refused_by_structure(tmp_path: Path) -> None:
    """Even a signed file cannot loop the explainer: a child before its parent, a feature
    past the inputs, a tree deeper than the limit are each refused."""
    x, y = _breast_cancer()
    bundle = _build(DecisionTreeClassifier(max_depth=4).fit(x, y), x, tmp_path)
    manifest = BundleManifest.model_validate_json((bundle / "manifest.json").read_bytes())
    original = json.loads((bundle / EXPLAIN_FILE).read_bytes())
    tree = original["model"]["trees"][0]
    cycle = json.loads(json.dumps(original))
    cycle["model"]["trees"][0]["left"][tree["left"][0]] = 0
    wide = json.loads(json.dumps(original))
    wide["model"]["trees"][0]["feature"][0] = len(manifest.inputs)
    for broken in (cycle, wide):
        with pytest.raises(BundleError, match=EXPLAIN_FILE):
            parse_explain(json.dumps(broken).encode(), manifest, Limits())
    with pytest.raises(BundleError, match="deeper than 3"):
        parse_explain(json.dumps(original).encode(), manifest, Limits(explain_depth_max=3))
