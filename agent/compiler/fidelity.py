"""The last check before a bundle built from a fitted estimator is written: its module,
run on the reference rows, must agree with the estimator itself.

Converters are not always right. skl2onnx 1.20 converts a ``CalibratedClassifierCV``
over a ``Pipeline`` as if the pipeline's preprocessing were not there (probabilities off
by up to 0.55 on breast_cancer), and isotonic calibration as a nearest-threshold lookup
where scikit-learn interpolates (off by up to 0.3 on iris with a gradient-boosting base).
onnxruntime agrees with those graphs, so only the library itself can tell. A bundle that
disagrees is refused, naming the estimator and the difference: a hospital must never get
a model that scores differently from the one that was validated.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.bundle.manifest import OutputKind
from agent.compiler.convert import describe_estimator
from agent.compiler.signature import Signature
from agent.errors import CompileError

# Probabilities and scores (relative to the largest |score|, at least 1) may differ from
# the library by f32 rounding: the parity tests measure <= 1e-5 on probabilities.
TOLERANCE = 1e-4


def check_against_library(
    model: Any,
    rows: np.ndarray,
    predictions: np.ndarray,
    signature: Signature,
    names: tuple[list[str], str] | None,
    text: Mapping[str, list[str]],
) -> None:
    """``CompileError`` unless ``predictions`` (the module's ABI outputs for ``rows``) match
    ``model.predict_proba`` (classifiers) or ``model.predict`` (regressors) within
    ``TOLERANCE``. ``names`` are the model's feature names, if it was fitted on a frame;
    ``text`` the levels of its text columns (``rows`` hold their level indices)."""
    x = _library_input(rows, names, text)
    kinds = [spec.kind for spec in signature.outputs]
    classifier = bool(kinds) and kinds[0] is OutputKind.label
    if classifier and not hasattr(model, "predict_proba"):
        raise CompileError(
            f"{describe_estimator(model)} has no predict_proba: its second output is decision "
            "scores, which the bundle would publish as probabilities; calibrate it, e.g. "
            "CalibratedClassifierCV(SVC())"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and dtype notes of the library
            predict = model.predict_proba if classifier else model.predict
            expected = np.asarray(predict(x), dtype=np.float64).reshape(len(rows), -1)
    except Exception as exc:  # the library's own error, whatever its type
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CompileError(
            f"{describe_estimator(model)} could not score the reference rows, so the bundle "
            f"cannot be checked against it: {first}"
        ) from None
    ours = predictions[:, 1:] if classifier else predictions
    scale = 1.0 if classifier else max(float(np.abs(expected).max(initial=0.0)), 1.0)
    if expected.shape != ours.shape:
        raise CompileError(
            f"{describe_estimator(model)}: the compiled outputs have shape {ours.shape}, "
            f"the library's {expected.shape}"
        )
    difference = float(np.abs(expected - ours).max(initial=0.0))
    if not difference <= TOLERANCE * scale:  # NaN fails too
        raise CompileError(
            f"{describe_estimator(model)}: the compiled model differs from the library by up "
            f"to {difference:.3g} on the reference rows (allowed {TOLERANCE * scale:.3g}); "
            f"the ONNX converter does not reproduce this estimator faithfully, no bundle "
            f"written (see docs/compiler.md, supported estimators)"
        )


def _library_input(
    rows: np.ndarray, names: tuple[list[str], str] | None, text: Mapping[str, list[str]]
) -> Any:
    x = rows.astype(np.float32)
    if names is None:
        return x
    import pandas as pd  # fitted on a DataFrame, so pandas is there

    frame = pd.DataFrame(x, columns=names[0])
    for column, levels in text.items():
        frame[column] = [levels[int(i)] for i in rows[:, names[0].index(column)]]
    return frame
