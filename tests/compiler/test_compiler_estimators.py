"""Estimators clinicians ask for (issue 17), each against onnxruntime (<= 1e-5, no label
flips) and scikit-learn itself (<= 1e-5) on scikit-learn's bundled datasets; and the
estimators that cannot be compiled faithfully, refused by name with the reason."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.neighbors import (
    KNeighborsClassifier,
    KNeighborsRegressor,
    RadiusNeighborsClassifier,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier

from agent.compiler import convert, knn
from agent.compiler.build import build, compile_onnx
from agent.compiler.signature import parse_declaration
from agent.errors import CompileError
from agent.limits import Limits
from agent.runtime.model import WasmModel
from tests.compiler.compiler_helpers import label_indices, run_compiled, run_onnxruntime


def _coded_iris() -> tuple[np.ndarray, np.ndarray]:
    """Iris with two columns turned into codes: petal width in 3 bins, length in 5."""
    x, y = load_iris(return_X_y=True)
    x = x.copy()
    x[:, 0] = np.digitize(x[:, 3], [0.5, 1.5])
    x[:, 1] = np.digitize(x[:, 2], [2, 3.5, 4.5, 5.5])
    return x, y


DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "breast_cancer": load_breast_cancer(return_X_y=True),
    "iris": load_iris(return_X_y=True),
    "wine": load_wine(return_X_y=True),
    "coded_iris": _coded_iris(),
    "diabetes": load_diabetes(return_X_y=True),
}


def _calibrated(base: Any, method: str, scaled: bool = True) -> Callable[[], Any]:
    """Calibration of ``base``, after a StandardScaler for linear bases. Not for trees: a
    feature scaled in f32 (ONNX) or f64 (scikit-learn) can land on either side of a
    threshold, which is the scaling's doing, not the calibration's."""
    if not scaled:
        return lambda: CalibratedClassifierCV(base, method=method, cv=3)
    return lambda: make_pipeline(
        StandardScaler(), CalibratedClassifierCV(base, method=method, cv=3)
    )


CASES: dict[str, tuple[Callable[[], Any], str]] = {
    "calibrated-sigmoid-logreg-binary": (
        _calibrated(LogisticRegression(), "sigmoid"),
        "breast_cancer",
    ),
    "calibrated-sigmoid-logreg-3-classes": (
        _calibrated(LogisticRegression(max_iter=500), "sigmoid"),
        "wine",
    ),
    "calibrated-sigmoid-forest-3-classes": (
        _calibrated(RandomForestClassifier(n_estimators=5, random_state=0), "sigmoid", False),
        "iris",
    ),
    "calibrated-isotonic-logreg-binary": (
        _calibrated(LogisticRegression(max_iter=1000), "isotonic"),
        "breast_cancer",
    ),
    "calibrated-isotonic-boosting-3-classes": (
        _calibrated(GradientBoostingClassifier(n_estimators=5, random_state=0), "isotonic", False),
        "iris",
    ),
    "calibrated-isotonic-svc-3-classes": (_calibrated(SVC(), "isotonic"), "wine"),
    "calibrated-isotonic-tree-binary": (
        _calibrated(DecisionTreeClassifier(max_depth=3, random_state=0), "isotonic", False),
        "breast_cancer",
    ),
    **{
        f"svc-{kernel}-{dataset}": (
            lambda kernel=kernel: make_pipeline(
                StandardScaler(), SVC(kernel=kernel, probability=True, random_state=0)
            ),
            dataset,
        )
        for kernel, dataset in (
            ("linear", "iris"),
            ("rbf", "breast_cancer"),
            ("rbf", "wine"),
            ("poly", "breast_cancer"),
            ("sigmoid", "iris"),
        )
    },
    **{
        f"calibrated-sigmoid-svc-{dataset}": (_calibrated(SVC(), "sigmoid"), dataset)
        for dataset in ("breast_cancer", "iris", "wine")
    },
    **{
        f"k-nearest-neighbours-{metric}-{dataset}": (
            lambda p=p: make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=7, p=p)),
            dataset,
        )
        for metric, p, dataset in (
            ("euclidean", 2, "iris"),
            ("euclidean", 2, "breast_cancer"),
            ("manhattan", 1, "wine"),
        )
    },
    "column-transformer-one-hot-two-columns": (
        lambda: make_pipeline(
            ColumnTransformer(
                [
                    ("num", StandardScaler(), [2, 3]),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), [0, 1]),
                ]
            ),
            LogisticRegression(max_iter=500),
        ),
        "coded_iris",
    ),
}


def _fit(make: Callable[[], Any], dataset: str) -> tuple[Any, np.ndarray]:
    x, y = DATA[dataset]
    x = x.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes of small budgets
        return make().fit(x, y), x


def _onnx(model: Any, x: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # skl2onnx reads SVC.probA_ (1.9)
        return to_onnx(model, x[:1])


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_onnxruntime_and_scikit_learn(case: str) -> None:
    model, x = _fit(*CASES[case])
    onx, _ = convert.to_onnx_model(model, x.shape[1])  # the compiler's own conversions
    ours, classes = run_compiled(onx, x)
    # onnxruntime cannot run the compiler's own k-NN node: it runs skl2onnx's graph
    own = any(node.domain == knn.DOMAIN for node in onx.graph.node)
    label, probabilities = run_onnxruntime(_onnx(model, x) if own else onx, x)
    assert (ours[:, 0] != label_indices(label, classes)).sum() == 0
    assert np.abs(ours[:, 1:] - probabilities).max() <= 1e-5
    assert np.abs(ours[:, 1:] - model.predict_proba(x)).max() <= 1e-5
    predicted = model.predict(x).astype(str)
    assert (np.asarray(classes)[ours[:, 0].astype(int)] != predicted).sum() == 0


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly"])
def test_support_vector_regression_parity(kernel: str) -> None:
    model, x = _fit(lambda: make_pipeline(StandardScaler(), SVR(kernel=kernel, C=50.0)), "diabetes")
    onx = _onnx(model, x)
    ours, _ = run_compiled(onx, x)
    (reference,) = run_onnxruntime(onx, x)
    scale = float(np.abs(reference).max())  # scores around 150: relative to the scale
    # The module sums kernels in f64 like libsvm; onnxruntime in f32, which with C=50
    # (coefficients up to 50) drifts by ~1.5e-5 of the scale.
    assert np.abs(ours[:, 0] - model.predict(x)).max() <= 1e-5 * scale
    assert np.abs(ours[:, 0] - reference.reshape(-1)).max() <= 1e-4 * scale


def _reference(tmp_path: Path, x: np.ndarray) -> Path:
    path = tmp_path / "reference.csv"
    header = ",".join(f"f{i}" for i in range(x.shape[1]))
    np.savetxt(path, x, delimiter=",", header=header, comments="", fmt="%.9g")
    return path


def test_k_nearest_neighbours_regression_parity() -> None:
    model, x = _fit(lambda: KNeighborsRegressor(n_neighbors=5), "diabetes")
    onx, _ = convert.to_onnx_model(model, x.shape[1])
    ours, _ = run_compiled(onx, x)
    (reference,) = run_onnxruntime(_onnx(model, x), x)
    scale = float(np.abs(reference).max())
    assert np.abs(ours[:, 0] - model.predict(x)).max() <= 1e-5 * scale
    assert np.abs(ours[:, 0] - reference.reshape(-1)).max() <= 1e-5 * scale


@pytest.mark.parametrize(
    ("make", "dataset"),
    [
        (lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(weights="distance")), "iris"),
        (lambda: KNeighborsClassifier(n_neighbors=7, p=1, weights="distance"), "wine"),
        (lambda: KNeighborsRegressor(weights="distance"), "diabetes"),
    ],
)
def test_distance_weighted_neighbours_match_scikit_learn(
    make: Callable[[], Any], dataset: str
) -> None:
    """Against scikit-learn only: skl2onnx's own graph for distance weights is no
    reference (on iris and wine 0.86 off on the training rows, where a neighbour at
    distance 0 votes alone, and up to 0.64 off on new points). Training rows and new
    points both match."""
    model, x = _fit(make, dataset)
    onx, _ = convert.to_onnx_model(model, x.shape[1])
    for rows in (x, x[::3] + np.float32(0.05)):
        ours, _ = run_compiled(onx, rows)
        if hasattr(model, "predict_proba"):
            assert np.abs(ours[:, 1:] - model.predict_proba(rows)).max() <= 1e-5
        else:
            scale = float(np.abs(model.predict(rows)).max())
            assert np.abs(ours[:, 0] - model.predict(rows)).max() <= 1e-5 * scale


def test_a_missing_feature_gives_k_nearest_neighbours_nan_outputs() -> None:
    model, x = _fit(lambda: KNeighborsClassifier(n_neighbors=3), "iris")
    onx, _ = convert.to_onnx_model(model, x.shape[1])
    rows = x[:2].copy()
    rows[1, 2] = np.nan
    ours, _ = run_compiled(onx, rows)
    assert not np.isnan(ours[0]).any() and np.isnan(ours[1]).all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: make_pipeline(StandardScaler(), RadiusNeighborsClassifier(radius=5.0)),
            r"^Pipeline.radiusneighborsclassifier: RadiusNeighborsClassifier is not supported: "
            r"radius neighbours .* KNeighborsClassifier/Regressor compile$",
        ),
        (
            lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(weights=np.sqrt)),
            r"^Pipeline.kneighborsclassifier: KNeighborsClassifier with weights=<ufunc 'sqrt'>: "
            r"only uniform and distance weights are supported$",
        ),
        (
            lambda: KNeighborsClassifier(metric="cosine"),
            r"^KNeighborsClassifier: KNeighborsClassifier with metric 'cosine': only euclidean",
        ),
    ],
)
def test_neighbours_that_cannot_be_compiled_are_refused_by_name(
    tmp_path: Path, make: Callable[[], Any], message: str
) -> None:
    model, x = _fit(make, "iris")
    with pytest.raises(CompileError, match=message):
        build(
            model,
            reference=_reference(tmp_path, x),
            name="knn",
            version="1.0.0",
            out=tmp_path / "bundle",
        )
    assert not (tmp_path / "bundle").exists()


def test_a_training_set_over_the_fuel_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knn, "FUEL_SHARE", 0.001)  # 5000 fuel units
    model, x = _fit(lambda: KNeighborsClassifier(), "iris")
    with pytest.raises(
        CompileError, match=r"keeps 150 training rows of 4 features; .* at most 23 rows compile$"
    ):
        build(
            model,
            reference=_reference(tmp_path, x),
            name="knn",
            version="1.0.0",
            out=tmp_path / "bundle",
        )


def test_the_largest_training_set_allowed_scores_within_the_default_fuel() -> None:
    features, k = 10, 5
    per_row = knn.FUEL_PER_VALUE * features + knn.FUEL_PER_ROW_AND_PICK * (k + 1)
    rows = int(Limits().model_fuel_per_row * knn.FUEL_SHARE) // per_row
    rng = np.random.default_rng(2)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    model = KNeighborsClassifier(n_neighbors=k).fit(x, rng.integers(0, 2, rows))
    onx, _ = convert.to_onnx_model(model, features)
    runtime = WasmModel.load(compile_onnx(onx, max_batch=8).wasm, limits=Limits())
    ours = np.asarray(runtime.predict(x[:8].tolist()))
    assert np.abs(ours[:, 1:] - model.predict_proba(x[:8])).max() <= 1e-6


def test_calibration_over_a_pipeline_is_refused_with_what_to_write_instead(
    tmp_path: Path,
) -> None:
    model, x = _fit(
        lambda: CalibratedClassifierCV(make_pipeline(StandardScaler(), LogisticRegression()), cv=3),
        "breast_cancer",
    )
    with pytest.raises(
        CompileError,
        match=r"^CalibratedClassifierCV: CalibratedClassifierCV "
        r"over a Pipeline is not supported: .* make_pipeline\(StandardScaler",
    ):
        build(
            model,
            reference=_reference(tmp_path, x),
            name="c",
            version="1.0.0",
            out=tmp_path / "bundle",
        )


def test_a_conversion_that_differs_from_the_library_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """skl2onnx writes isotonic calibration as a nearest-threshold lookup; scikit-learn
    interpolates. With a base of continuous scores the two differ, and onnxruntime agrees
    with the graph, so only the library check catches it: here with the compiler's own
    rewrite to interpolation switched off."""
    monkeypatch.setattr(convert, "interpolate_isotonic", lambda proto: proto)
    model, x = _fit(
        _calibrated(GradientBoostingClassifier(n_estimators=5, random_state=0), "isotonic"),
        "iris",
    )
    with pytest.raises(CompileError) as caught:
        build(
            model,
            reference=_reference(tmp_path, x),
            name="c",
            version="1.0.0",
            out=tmp_path / "bundle",
        )
    message = str(caught.value)
    assert message.startswith(
        "Pipeline(StandardScaler, CalibratedClassifierCV): the compiled "
        "model differs from the library by up to 0."
    )
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: make_pipeline(StandardScaler(), SVC()),
            r"^Pipeline\(StandardScaler, SVC\) has no predict_proba: its second output is "
            r"decision scores, .* CalibratedClassifierCV\(SVC\(\)\)$",
        ),
        (
            lambda: make_pipeline(StandardScaler(), RidgeClassifier()),
            r"^Pipeline\(StandardScaler, RidgeClassifier\) has no predict_proba: its second "
            r"output is "
            r"decision scores",
        ),
    ],
)
def test_classifiers_without_probabilities_are_refused(
    tmp_path: Path, make: Callable[[], Any], message: str
) -> None:
    model, x = _fit(make, "wine")
    with pytest.raises(CompileError, match=message):
        build(
            model,
            reference=_reference(tmp_path, x),
            name="s",
            version="1.0.0",
            out=tmp_path / "bundle",
        )


def test_raw_svm_decisions_are_not_published_as_probabilities() -> None:
    """An ONNX SVMClassifier without probability estimates outputs decisions ([-s, s] for
    two classes): refused as a classifier output, compiled as declared scores, equal to
    onnxruntime's. (With more classes skl2onnx computes a one-vs-rest score from them in
    further nodes; only the library check of an estimator build catches that.)"""
    model, x = _fit(lambda: make_pipeline(StandardScaler(), SVC()), "breast_cancer")
    onx = _onnx(model, x)
    with pytest.raises(CompileError, match="raw decision scores, not probabilities"):
        compile_onnx(onx)
    classes = ",".join(str(c) for c in model.classes_)
    declared = [parse_declaration(f"class:classes={classes}"), parse_declaration("score")]
    with pytest.raises(CompileError, match="raw decision scores, not probabilities"):
        compile_onnx(
            onx, outputs=[declared[0], parse_declaration(f"probability:classes={classes}")]
        )
    compiled = compile_onnx(onx, outputs=declared)
    ours = np.asarray(WasmModel.load(compiled.wasm, limits=Limits()).predict(x.tolist()))
    label, scores = run_onnxruntime(onx, x)
    assert (ours[:, 0] != label_indices(label, [str(c) for c in model.classes_])).sum() == 0
    assert np.abs(ours[:, 1:] - scores).max() <= 1e-4 * max(1.0, float(np.abs(scores).max()))
