"""The demo model as a scikit-learn object, refitted exactly as fixtures/demo/train.py fits it.

train.py writes only the ONNX export and the CSVs, not the fitted estimator, so the peers
refit it: same seed, same simulation, same median imputation, same hyper-parameters. With
the same numpy and scikit-learn versions the trees are the ones in fixtures/demo/model.onnx
(``check_parity`` proves it on the holdout before any figure is taken).
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ONNX_MODEL = REPO / "fixtures" / "demo" / "model.onnx"
REFERENCE = REPO / "fixtures" / "demo" / "reference.csv"
FEATURES: tuple[str, ...] = (
    "heart_rate",
    "respiratory_rate",
    "body_temperature",
    "systolic_bp",
    "spo2",
    "wbc",
    "creatinine",
    "age",
    "sex",
)  # fixtures/demo/train.py's FEATURES (checked in fit_demo_model)


@dataclass(frozen=True)
class PeerModel:
    """What the peer services load: the estimator (None for onnxruntime, which reads the
    ONNX file) and the training medians, imputed for a missing lab."""

    estimator: Any  # sklearn GradientBoostingClassifier
    medians: dict[str, float]


def reference_medians() -> dict[str, float]:
    """Per-feature medians of the reference data, missing labs left out: the values
    train.py imputes (sex, a category, gets its level index)."""
    columns = np.genfromtxt(
        REFERENCE, delimiter=",", skip_header=1, dtype=float, usecols=range(len(FEATURES) - 1)
    )
    medians = np.nanmedian(columns, axis=0)
    return {**dict(zip(FEATURES, map(float, medians), strict=False)), "sex": 0.0}


def fit_demo_model() -> PeerModel:
    """Replay the training half of ``train.main`` (the random draws in the same order)."""
    from sklearn.ensemble import GradientBoostingClassifier

    from fixtures.demo import train

    if tuple(train.FEATURES) != FEATURES:
        raise RuntimeError("fixtures/demo/train.py changed its features")
    rng = np.random.default_rng(train.SEED)
    x_ref, y_ref = train.simulate(rng, train.N_REFERENCE)
    train.simulate(rng, train.N_HOLDOUT)  # drawn between reference and masks in train.main
    observed = x_ref.copy()
    for column in (FEATURES.index("wbc"), FEATURES.index("creatinine")):
        observed[rng.random(train.N_REFERENCE) < 0.10, column] = np.nan
    medians = np.nanmedian(observed, axis=0)
    rows, cols = np.where(np.isnan(observed))
    observed[rows, cols] = medians[cols]
    estimator = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
    estimator.fit(observed.astype(np.float32), y_ref)
    return PeerModel(estimator, {name: float(m) for name, m in zip(FEATURES, medians, strict=True)})


def pickled_model(cache: Path) -> Path:
    """The pickle the peers load, fitted once per cache folder."""
    path = cache / "deterioration-gb.pkl"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(pickle.dumps(fit_demo_model()))
        partial.replace(path)
    return path


def load_pickled(path: Path) -> PeerModel:
    """Unpickle a model written by ``pickled_model`` (a file this benchmark wrote itself)."""
    model: PeerModel = pickle.loads(path.read_bytes())
    return model


def check_parity(model: PeerModel) -> float:
    """Largest |p_sklearn - p_onnxruntime| over the holdout; the refit must match the ONNX."""
    import onnxruntime as ort

    rows = np.loadtxt(
        REPO / "fixtures" / "demo" / "holdout.csv",
        delimiter=",",
        skiprows=1,
        usecols=range(len(FEATURES) - 1),
        dtype=np.float32,
    )
    sexes = np.loadtxt(
        REPO / "fixtures" / "demo" / "holdout.csv",
        delimiter=",",
        skiprows=1,
        usecols=[len(FEATURES) - 1],
        dtype=str,
    )
    x = np.column_stack([rows, (sexes == "male").astype(np.float32)]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = ort.InferenceSession(str(ONNX_MODEL), providers=["CPUExecutionProvider"])
    onnx_p = np.array([row[1] for row in session.run(None, {session.get_inputs()[0].name: x})[1]])
    skl_p = model.estimator.predict_proba(x)[:, 1]
    return float(np.max(np.abs(onnx_p - skl_p)))
