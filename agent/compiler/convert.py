"""A trained model in any accepted form -> an ``onnx.ModelProto`` and its source tag.

Accepted: an ``onnx.ModelProto``; a path to an ``.onnx`` file; a fitted XGBoost or
LightGBM scikit-learn-API estimator (``XGBClassifier``, ``LGBMRegressor``...), converted by
onnxmltools; a fitted scikit-learn HistGradientBoosting estimator, lowered by
``hist_gradient`` (skl2onnx 1.20 fails on it); any other fitted scikit-learn estimator or
pipeline, converted by skl2onnx. The converters are imported lazily: they belong to the
``[build]`` extra, which a hospital server never installs. Every input is declared float32
``[None, n_features]`` and named ``X``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from agent.compiler.hist_gradient import hist_gradient_onnx, is_hist_gradient_boosting
from agent.errors import CompileError


def to_onnx_model(model: Any, n_features: int) -> tuple[onnx.ModelProto, str]:
    """``(proto, source)``; ``source`` is ``onnx``, ``xgboost``, ``lightgbm`` or
    ``sklearn`` (the manifest's provenance). Raises ``CompileError`` when the model reads a
    different number of features or no converter accepts it."""
    if isinstance(model, onnx.ModelProto):
        return model, "onnx"
    if isinstance(model, str | Path):
        return onnx.load(str(model)), "onnx"
    if not (hasattr(model, "fit") and hasattr(model, "predict")):
        raise CompileError(f"cannot compile a {type(model).__name__}")
    expected = getattr(model, "n_features_in_", n_features)
    if expected != n_features:
        raise CompileError(
            f"the model reads {expected} features, the reference has {n_features} columns"
        )
    library = type(model).__module__.split(".")[0]
    if library in ("xgboost", "lightgbm"):
        return _onnxmltools(model, library, n_features), library
    if is_hist_gradient_boosting(model):
        return hist_gradient_onnx(model, n_features), "sklearn"
    return _skl2onnx(model, n_features), "sklearn"


def _onnxmltools(model: Any, library: str, n_features: int) -> onnx.ModelProto:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    convert = (
        onnxmltools.convert_xgboost if library == "xgboost" else onnxmltools.convert_lightgbm
    )
    try:
        proto: onnx.ModelProto = convert(
            model, initial_types=[("X", FloatTensorType([None, n_features]))]
        )
    except Exception as exc:  # onnxmltools raises many types for unsupported models
        raise CompileError(f"onnxmltools cannot convert {type(model).__name__}") from exc
    return proto


def _skl2onnx(model: Any, n_features: int) -> onnx.ModelProto:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    try:
        proto: onnx.ModelProto = to_onnx(
            model, initial_types=[("X", FloatTensorType([None, n_features]))]
        )
    except Exception as exc:  # skl2onnx raises many types for unsupported estimators
        raise CompileError(f"skl2onnx cannot convert {type(model).__name__}") from exc
    return proto
