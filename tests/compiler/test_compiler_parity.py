"""Every supported scikit-learn conversion against onnxruntime (<= 1e-5 on probabilities,
no label flips) and against scikit-learn itself (<= 1e-4), on scikit-learn's datasets."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    Binarizer,
    MinMaxScaler,
    Normalizer,
    OneHotEncoder,
    StandardScaler,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from agent.compiler import trees
from tests.compiler.compiler_helpers import label_indices, run_compiled, run_onnxruntime


def _coded_dataset() -> tuple[np.ndarray, np.ndarray]:
    """Iris with its petal length turned into a 0..4 code (a categorical column)."""
    x, y = load_iris(return_X_y=True)
    x = x.copy()
    x[:, 1] = np.digitize(x[:, 2], [2, 3.5, 4.5, 5.5])
    return x, y


DATA = {
    "breast_cancer": load_breast_cancer(return_X_y=True),
    "iris": load_iris(return_X_y=True),
    "wine": load_wine(return_X_y=True),
    "diabetes": load_diabetes(return_X_y=True),
    "coded": _coded_dataset(),
}

CLASSIFIERS: dict[str, tuple[Callable[[], Any], str]] = {
    "gb-binary": (
        lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0),
        "breast_cancer",
    ),
    "gb-multiclass": (
        lambda: GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0),
        "iris",
    ),
    "rf-binary": (
        lambda: RandomForestClassifier(n_estimators=7, max_depth=6, random_state=0),
        "breast_cancer",
    ),
    "rf-multiclass": (
        lambda: RandomForestClassifier(n_estimators=7, max_depth=5, random_state=0),
        "wine",
    ),
    "extra-trees": (
        lambda: ExtraTreesClassifier(n_estimators=5, max_depth=5, random_state=0),
        "iris",
    ),
    "decision-tree": (lambda: DecisionTreeClassifier(max_depth=5, random_state=0), "wine"),
    "logreg-binary-scaled": (
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        "breast_cancer",
    ),
    "logreg-minmax": (
        lambda: make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=500)),
        "iris",
    ),
    "logreg-multinomial": (
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        "wine",
    ),
    "mlp-relu": (
        lambda: make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=200, random_state=0),
        ),
        "breast_cancer",
    ),
    "mlp-tanh-multiclass": (
        lambda: make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", max_iter=300, random_state=0),
        ),
        "iris",
    ),
    "mlp-logistic": (
        lambda: make_pipeline(
            StandardScaler(),
            MLPClassifier(
                hidden_layer_sizes=(8,), activation="logistic", max_iter=300, random_state=0
            ),
        ),
        "wine",
    ),
    "normalizer-imputer-binarizer": (
        lambda: make_pipeline(
            SimpleImputer(),
            Normalizer(norm="l2"),
            Binarizer(threshold=0.01),
            DecisionTreeClassifier(max_depth=4, random_state=0),
        ),
        "breast_cancer",
    ),
    "column-transformer-one-hot": (
        lambda: make_pipeline(
            ColumnTransformer(
                [
                    ("num", StandardScaler(), [0, 2, 3]),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), [1]),
                ]
            ),
            LogisticRegression(max_iter=300),
        ),
        "coded",
    ),
}

REGRESSORS: dict[str, Callable[[], Any]] = {
    "gb": lambda: GradientBoostingRegressor(n_estimators=15, max_depth=3, random_state=0),
    "rf": lambda: RandomForestRegressor(n_estimators=6, max_depth=5, random_state=0),
    "decision-tree": lambda: DecisionTreeRegressor(max_depth=5, random_state=0),
    "linear": lambda: LinearRegression(),
    "ridge-scaled": lambda: make_pipeline(StandardScaler(), Ridge()),
    "mlp": lambda: make_pipeline(
        StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0)
    ),
}


def _fit(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning from tiny MLP budgets
        return estimator.fit(x.astype(np.float32), y)


TREE_CASES = [
    "gb-binary",
    "gb-multiclass",
    "rf-binary",
    "rf-multiclass",
    "extra-trees",
    "decision-tree",
]


@pytest.mark.parametrize("case", TREE_CASES)
def test_tree_classifier_parity_with_the_table_layout(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trees, "UNROLL_MAX_NODES", 0)
    test_classifier_parity(case)


@pytest.mark.parametrize("case", list(CLASSIFIERS))
def test_classifier_parity(case: str) -> None:
    make, dataset = CLASSIFIERS[case]
    x, y = DATA[dataset]
    model = _fit(make(), x, y)
    onx = to_onnx(model, x[:1].astype(np.float32))
    ours, classes = run_compiled(onx, x)
    label, probabilities = run_onnxruntime(onx, x)
    assert (ours[:, 0] != label_indices(label, classes)).sum() == 0
    assert np.abs(ours[:, 1:] - probabilities).max() <= 1e-5
    assert np.abs(ours[:, 1:] - model.predict_proba(x.astype(np.float32))).max() <= 1e-4
    assert (
        np.asarray(classes)[ours[:, 0].astype(int)]
        != model.predict(x.astype(np.float32)).astype(str)
    ).sum() == 0


@pytest.mark.parametrize("case", ["gb", "rf", "decision-tree"])
def test_tree_regressor_parity_with_the_table_layout(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trees, "UNROLL_MAX_NODES", 0)
    test_regressor_parity(case)


@pytest.mark.parametrize("case", list(REGRESSORS))
def test_regressor_parity(case: str) -> None:
    x, y = DATA["diabetes"]
    model = _fit(REGRESSORS[case](), x, y)
    onx = to_onnx(model, x[:1].astype(np.float32))
    ours, _ = run_compiled(onx, x)
    (reference,) = run_onnxruntime(onx, x)
    scale = np.abs(reference).max()
    # f32 outputs around 150: compare relative to the output scale.
    assert np.abs(ours[:, 0] - reference.reshape(-1)).max() <= 1e-5 * max(scale, 1.0)
    assert np.abs(ours[:, 0] - model.predict(x.astype(np.float32))).max() <= 1e-4 * scale


def test_no_zipmap_classifier_outputs_a_plain_probability_tensor() -> None:
    x, y = DATA["iris"]
    model = _fit(GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0), x, y)
    onx = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
    ours, classes = run_compiled(onx, x)
    label, probabilities = run_onnxruntime(onx, x)
    assert classes == ["0", "1", "2"]
    assert (ours[:, 0] != label_indices(label, classes)).sum() == 0
    assert np.abs(ours[:, 1:] - probabilities).max() <= 1e-5


def test_string_class_labels() -> None:
    x, y = DATA["iris"]
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = _fit(RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0), x, names)
    onx = to_onnx(model, x[:1].astype(np.float32))
    ours, classes = run_compiled(onx, x)
    label, probabilities = run_onnxruntime(onx, x)
    assert classes == ["setosa", "versicolor", "virginica"]
    assert (ours[:, 0] != label_indices(label, classes)).sum() == 0
    assert np.abs(ours[:, 1:] - probabilities).max() <= 1e-5
