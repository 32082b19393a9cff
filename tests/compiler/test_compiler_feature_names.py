"""The bundle reads each feature from the column of that name (issue 12): the estimator's
``feature_names_in_``, an ONNX graph's per-feature inputs, the reference CSV header and the
schema must agree by name. A reordered reference is put in the model's order; names that
do not match are refused naming both lists; ``name``/``version`` are checked before any
compiling and leave nothing behind."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from agent.bundle.manifest import BundleManifest
from agent.compiler.build import build
from agent.compiler.convert import to_onnx_model
from agent.errors import CompileError
from agent.limits import Limits
from agent.runtime.model import WasmModel
from tests.compiler.compiler_helpers import run_compiled, run_onnxruntime


def _frame() -> tuple[pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True).frame
    return data.drop(columns="target").iloc[:, :8].astype(np.float32), data["target"]


def _fit(model: Any, x: pd.DataFrame, y: pd.Series) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(x, y)


def _bundle_proba(out: Path, x: pd.DataFrame) -> tuple[BundleManifest, np.ndarray]:
    manifest = BundleManifest.model_validate_json((out / "manifest.json").read_bytes())
    rows = x[manifest.feature_names()].to_numpy(np.float64).tolist()
    runtime = WasmModel.load((out / "model.wasm").read_bytes(), limits=Limits())
    return manifest, np.asarray(runtime.predict(rows))[:, 1:]


def test_a_reordered_reference_csv_is_put_in_the_estimators_order(tmp_path: Path) -> None:
    x, y = _frame()
    model = _fit(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), x, y)
    reordered = list(reversed(x.columns))
    x[reordered].to_csv(tmp_path / "reference.csv", index=False)
    out = build(
        model,
        reference=tmp_path / "reference.csv",
        name="bc",
        version="1.0.0",
        out=tmp_path / "bundle",
    )
    manifest, proba = _bundle_proba(out, x)
    assert manifest.feature_names() == list(x.columns)
    assert manifest.reference.features["mean radius"].mean == pytest.approx(
        float(x["mean radius"].mean()), rel=1e-6
    )
    assert np.abs(proba - model.predict_proba(x)).max() <= 1e-5


def test_a_reference_naming_other_features_is_refused_naming_both(tmp_path: Path) -> None:
    x, y = _frame()
    model = _fit(LogisticRegression(max_iter=500), x, y)
    x.rename(columns={"mean area": "area"}).to_csv(tmp_path / "reference.csv", index=False)
    with pytest.raises(CompileError) as caught:
        build(
            model,
            reference=tmp_path / "reference.csv",
            name="bc",
            version="1.0.0",
            out=tmp_path / "bundle",
        )
    message = str(caught.value)
    assert "\n" not in message
    assert "LogisticRegression.feature_names_in_ [" in message and "'mean area'" in message
    assert "reference CSV header [" in message and "'area'" in message
    assert not (tmp_path / "bundle").exists()


def test_a_column_transformer_selecting_by_name_gets_one_input_per_feature(
    tmp_path: Path,
) -> None:
    """skl2onnx finds named columns only as graph inputs of those names; the compiler lays
    them side by side in the ABI row and the reference is matched to them by name
    (skl2onnx writes "mean radius" as the input "mean_radius")."""
    x, y = _frame()
    x["mean texture"] = (x["mean texture"] > x["mean texture"].median()).astype(np.float32)
    model = _fit(
        make_pipeline(
            ColumnTransformer(
                [
                    ("num", StandardScaler(), ["mean radius", "mean area", "mean smoothness"]),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["mean texture"]),
                ]
            ),
            LogisticRegression(max_iter=500),
        ),
        x[x.columns[:5]],
        y,
    )
    onx, _ = to_onnx_model(model, 5)
    assert [i.name for i in onx.graph.input] == [
        "mean_radius",
        "mean_texture",
        "mean_perimeter",
        "mean_area",
        "mean_smoothness",
    ]
    values = x[x.columns[:5]].to_numpy(np.float64)
    ours, _ = run_compiled(onx, values)
    _, reference = run_onnxruntime(onx, values)
    assert np.abs(ours[:, 1:] - reference).max() <= 1e-5
    x[list(reversed(x.columns[:5]))].to_csv(tmp_path / "reference.csv", index=False)
    out = build(
        model,
        reference=tmp_path / "reference.csv",
        name="bc",
        version="1.0.0",
        out=tmp_path / "bundle",
    )
    manifest, proba = _bundle_proba(out, x)
    assert manifest.feature_names() == list(x.columns[:5])
    assert np.abs(proba - model.predict_proba(x[x.columns[:5]])).max() <= 1e-5


def test_an_onnx_graph_with_per_feature_inputs_is_matched_by_name(tmp_path: Path) -> None:
    x, y = _frame()
    x = x[x.columns[:3]]
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model = _fit(
        make_pipeline(
            ColumnTransformer([("num", StandardScaler(), list(x.columns))]), LogisticRegression()
        ),
        x,
        y,
    )
    onx = to_onnx(model, initial_types=[(c, FloatTensorType([None, 1])) for c in x.columns])
    path = tmp_path / "model.onnx"
    onnx.save(onx, str(path))
    x[["mean perimeter", "mean radius", "mean texture"]].to_csv(
        tmp_path / "reference.csv", index=False
    )
    out = build(
        path,
        reference=tmp_path / "reference.csv",
        name="bc",
        version="1.0.0",
        out=tmp_path / "bundle",
    )
    manifest, proba = _bundle_proba(out, x)
    assert manifest.feature_names() == list(x.columns)
    assert np.abs(proba - model.predict_proba(x)).max() <= 1e-5
    x.rename(columns={"mean radius": "radius"}).to_csv(tmp_path / "reference.csv", index=False)
    with pytest.raises(CompileError, match=r"the ONNX graph's inputs \['mean_radius'"):
        build(
            path,
            reference=tmp_path / "reference.csv",
            name="bc",
            version="1.0.0",
            out=tmp_path / "other",
        )


@pytest.mark.parametrize(
    ("name", "version", "error"),
    [
        ("Sepsis Model", "1.0.0", r"^name 'Sepsis Model': model name must be lowercase"),
        ("sepsis", "1.0", r"^version: not a semantic version"),
    ],
)
def test_name_and_version_are_checked_before_compiling(
    tmp_path: Path, name: str, version: str, error: str
) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(CompileError, match=error):
        # The model is not even looked at: a typo in the name costs no compile.
        build(object(), reference=tmp_path / "absent.csv", name=name, version=version, out=out)
    assert not out.exists()


def test_the_schema_must_name_reference_features(tmp_path: Path) -> None:
    x, y = _frame()
    model = _fit(LogisticRegression(max_iter=500), x, y)
    x.to_csv(tmp_path / "reference.csv", index=False)
    with pytest.raises(CompileError, match=r"\['radius'\] \(the reference CSV header: \["):
        build(
            model,
            reference=tmp_path / "reference.csv",
            name="bc",
            version="1.0.0",
            out=tmp_path / "bundle",
            schema={"features": {"radius": {"unit": "mm"}}},
        )


def _clinical_frame() -> tuple[pd.DataFrame, pd.Series]:
    """breast_cancer's first columns plus two text columns derived from it, as a site's
    export holds sex or ward: words, not codes."""
    x, y = _frame()
    x = x[x.columns[:4]].copy()
    x["size"] = np.where(x["mean area"] > x["mean area"].median(), "large", "small")
    x["texture"] = pd.cut(x["mean texture"], [0, 17, 21, 100], labels=["fine", "mid", "coarse"])
    x["texture"] = x["texture"].astype(str)
    return x, y


def test_text_categories_take_the_encoders_categories_as_levels(tmp_path: Path) -> None:
    x, y = _clinical_frame()
    model = _fit(
        make_pipeline(
            ColumnTransformer(
                [
                    ("num", StandardScaler(), ["mean radius", "mean perimeter"]),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["size", "texture"]),
                ]
            ),
            LogisticRegression(max_iter=500),
        ),
        x,
        y,
    )
    x[list(reversed(x.columns))].to_csv(tmp_path / "reference.csv", index=False)
    out = build(
        model,
        reference=tmp_path / "reference.csv",
        name="bc",
        version="1.0.0",
        out=tmp_path / "bundle",
    )
    manifest = BundleManifest.model_validate_json((out / "manifest.json").read_bytes())
    assert manifest.feature_names() == list(x.columns)
    levels = {f.name: f.levels for f in manifest.inputs}
    assert levels["size"] == ["large", "small"]
    assert levels["texture"] == ["coarse", "fine", "mid"]
    assert levels["mean radius"] == []
    assert set(manifest.reference.features["texture"].category_frequencies) == {
        "coarse",
        "fine",
        "mid",
    }
    import agent

    result = agent.load(out).predict(x)
    expected = model.predict_proba(x)
    assert np.abs(result[["probability_0", "probability_1"]].to_numpy() - expected).max() <= 1e-5
    assert (result["label"].to_numpy() != model.predict(x).astype(str)).sum() == 0
    # onnxruntime on the same graph, fed the words
    import onnxruntime as ort

    onx, _ = to_onnx_model(model, 6)
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {
        i.name: (
            x[c].to_numpy(object) if i.type == "tensor(string)" else x[c].to_numpy(np.float32)
        ).reshape(-1, 1)
        for i, c in zip(session.get_inputs(), x.columns, strict=True)
    }
    _, probabilities = session.run(None, feeds)
    reference = np.array([[row[0], row[1]] for row in probabilities])
    got = result[["probability_0", "probability_1"]].to_numpy()
    assert np.abs(got - reference).max() <= 1e-5


def test_schema_levels_that_contradict_the_encoder_are_refused(tmp_path: Path) -> None:
    x, y = _clinical_frame()
    model = _fit(
        make_pipeline(
            ColumnTransformer([("cat", OneHotEncoder(), ["size"])], remainder="drop"),
            LogisticRegression(),
        ),
        x,
        y,
    )
    x.to_csv(tmp_path / "reference.csv", index=False)
    with pytest.raises(CompileError, match=r"schema levels of 'size' \['big', 'small'\] differ"):
        build(
            model,
            reference=tmp_path / "reference.csv",
            name="bc",
            version="1.0.0",
            out=tmp_path / "bundle",
            schema={"features": {"size": {"levels": ["big", "small"]}}},
        )


@pytest.mark.parametrize("library", ["xgboost", "lightgbm", "sklearn"])
def test_boosters_fitted_on_a_frame_read_a_reordered_reference(
    tmp_path: Path, library: str
) -> None:
    """XGBoost keeps the frame's column names in its booster (onnxmltools wants f0, f1...),
    LightGBM rewrites them ("mean_radius"); both, and HistGradientBoosting, match the
    library on the frame with missing values after a build from a reversed header."""
    import xgboost
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = _frame()
    x.loc[::9, "mean texture"] = np.nan
    model = {
        "xgboost": lambda: xgboost.XGBClassifier(n_estimators=10, max_depth=3),
        "lightgbm": lambda: LGBMClassifier(n_estimators=10, verbose=-1),
        "sklearn": lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
    }[library]()
    _fit(model, x, y)
    x[list(reversed(x.columns))].to_csv(tmp_path / "reference.csv", index=False)
    out = build(
        model,
        reference=tmp_path / "reference.csv",
        name="b",
        version="1.0.0",
        out=tmp_path / "bundle",
    )
    import agent

    result = agent.load(out).predict(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model.predict_proba(x)
    assert np.abs(result[["probability_0", "probability_1"]].to_numpy() - expected).max() <= 1e-5
