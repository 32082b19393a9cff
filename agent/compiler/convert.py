"""A trained model in any accepted form -> an ``onnx.ModelProto`` and its source tag, and
the feature names the model itself knows.

Accepted: an ``onnx.ModelProto``; a path to an ``.onnx`` file; a fitted XGBoost or
LightGBM scikit-learn-API estimator (``XGBClassifier``, ``LGBMRegressor``...), converted by
onnxmltools; a fitted scikit-learn HistGradientBoosting estimator, lowered by
``hist_gradient`` (skl2onnx 1.20 fails on it); any other fitted scikit-learn estimator or
pipeline, converted by skl2onnx. The converters are imported lazily: they belong to the
``[build]`` extra, which a hospital server never installs. Inputs are one float32 input
``X`` ``[None, n_features]``, or, for a pipeline whose ``ColumnTransformer`` selects
DataFrame columns by name (skl2onnx finds them only as inputs of those names), one
``[None, 1]`` input per feature named after ``feature_names_in_``: text for the string
columns a ``OneHotEncoder`` encodes (``model_text_levels``), float32 otherwise.

Beyond converting: estimators known not to convert faithfully are refused by name first
(``UNSUPPORTED``, calibration over a Pipeline, k-NN settings ``knn`` cannot compile);
k-NN gets the compiler's own skl2onnx converter (``knn``); isotonic calibration is
rewritten into interpolation (``isotonic``); converter errors keep their first line and
name the estimator.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import onnx

from agent.compiler import knn
from agent.compiler.hist_gradient import hist_gradient_onnx, is_hist_gradient_boosting
from agent.compiler.isotonic import interpolate_isotonic
from agent.errors import CompileError


def load_model(model: Any) -> Any:
    """A path to an ``.onnx`` file loaded; anything else as it is."""
    if isinstance(model, str | Path):
        try:
            return onnx.load(str(model))
        except OSError as exc:
            raise CompileError(f"cannot read the ONNX file {Path(model).name!r}") from exc
        except Exception as exc:  # protobuf's DecodeError and friends
            raise CompileError(f"{Path(model).name!r} is not an ONNX model") from exc
    return model


def model_feature_names(model: Any) -> tuple[list[str], str] | None:
    """The feature names ``model`` reads, in its input order, and where they come from:
    a fitted estimator's ``feature_names_in_`` (set when it was fitted on a DataFrame),
    or the inputs of an ONNX graph with one ``[N, 1]`` input per feature. None when the
    model knows only a column count."""
    if isinstance(model, onnx.ModelProto):
        inputs = _graph_inputs(model)
        if len(inputs) > 1 and all(_per_feature(i) for i in inputs):
            return [i.name for i in inputs], "the ONNX graph's inputs"
        return None
    try:
        names = getattr(model, "feature_names_in_", None)
    except AttributeError:  # LightGBM raises when fitted without names
        names = None
    if names is None:
        return None
    return [str(n) for n in names], f"{type(model).__name__}.feature_names_in_"


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _per_feature(info: onnx.ValueInfoProto) -> bool:
    dims = info.type.tensor_type.shape.dim
    return len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value == 1


_RADIUS = (
    "radius neighbours compare each row with every training row within a radius (an ONNX "
    "Scan), which the compiler does not lower; KNeighborsClassifier/Regressor compile"
)
# Estimators refused by name, with the reason and what to do instead.
UNSUPPORTED: dict[str, str] = {
    "RadiusNeighborsClassifier": _RADIUS,
    "RadiusNeighborsRegressor": _RADIUS,
}
_NEIGHBOURS = ("KNeighborsClassifier", "KNeighborsRegressor")


def _refuse_known_unsupported(model: Any) -> None:
    """``CompileError`` naming the first step of ``model`` that cannot be compiled
    faithfully, before any converter runs (their own errors name ONNX internals)."""
    for path, step in _steps(model, type(model).__name__):
        name = type(step).__name__
        if name in UNSUPPORTED:
            raise CompileError(f"{path}: {name} is not supported: {UNSUPPORTED[name]}")
        if name in _NEIGHBOURS:
            try:
                knn.check_supported(step)
            except CompileError as exc:
                raise CompileError(f"{path}: {exc}") from None
        base = getattr(step, "estimator", None)
        if name == "CalibratedClassifierCV" and type(base).__name__ == "Pipeline":
            raise CompileError(
                f"{path}: CalibratedClassifierCV over a Pipeline is not supported: skl2onnx "
                "converts it without the pipeline's preprocessing (off by up to 0.55); "
                "calibrate the last step instead, e.g. make_pipeline(StandardScaler(), "
                "CalibratedClassifierCV(LogisticRegression()))"
            )


def _steps(model: Any, path: str) -> list[tuple[str, Any]]:
    """``model`` and every estimator inside it (pipeline steps, column transformers,
    calibrated and ensembled base estimators), each with a readable path."""
    found = [(path, model)]
    children: list[tuple[str, Any]] = []
    if isinstance(getattr(model, "steps", None), list):
        children = [(name, step) for name, step in model.steps]
    elif type(model).__name__ == "ColumnTransformer":
        children = [(name, t) for name, t, _ in getattr(model, "transformers_", [])]
    elif getattr(model, "estimator", None) is not None:
        children = [("estimator", model.estimator)]
    for name, child in children:
        if hasattr(child, "fit"):
            found += _steps(child, f"{path}.{name}")
    return found


def to_onnx_model(model: Any, n_features: int) -> tuple[onnx.ModelProto, str]:
    """``(proto, source)``; ``source`` is ``onnx``, ``xgboost``, ``lightgbm`` or
    ``sklearn`` (the manifest's provenance). Raises ``CompileError`` when the model reads a
    different number of features, is a known unsupported estimator (``UNSUPPORTED``) or
    no converter accepts it."""
    model = load_model(model)
    if isinstance(model, onnx.ModelProto):
        return model, "onnx"
    if not (hasattr(model, "fit") and hasattr(model, "predict")):
        raise CompileError(f"cannot compile a {type(model).__name__}")
    _refuse_known_unsupported(model)
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

    convert = onnxmltools.convert_xgboost if library == "xgboost" else onnxmltools.convert_lightgbm
    if library == "xgboost" and model.get_booster().feature_names is not None:
        # onnxmltools reads splits by "f<index>" names only; the booster of a model fitted
        # on a DataFrame carries the column names (the order is checked by name already)
        model = copy.deepcopy(model)
        model.get_booster().feature_names = None
    try:
        proto: onnx.ModelProto = convert(
            model, initial_types=[("X", FloatTensorType([None, n_features]))]
        )
    except Exception as exc:  # onnxmltools raises many types for unsupported models
        raise CompileError(
            f"onnxmltools cannot convert {type(model).__name__}: {_reason(exc)}"
        ) from None
    return proto


def _skl2onnx(model: Any, n_features: int) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if _selects_columns_by_name(model):
        text = model_text_levels(model)
        inputs = [
            (str(n), StringTensorType([None, 1]) if n in text else FloatTensorType([None, 1]))
            for n in model.feature_names_in_
        ]
    else:
        inputs = [("X", FloatTensorType([None, n_features]))]
    try:
        with warnings.catch_warnings():
            # scikit-learn's deprecation notes on attributes skl2onnx reads (SVC's probA_
            # in 1.9): the converter's business, not an error in the user's model
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            proto: onnx.ModelProto = convert_sklearn(
                model,
                initial_types=inputs,
                custom_conversion_functions=_custom_converters(),
            )
    except Exception as exc:  # skl2onnx raises many types for unsupported estimators
        raise CompileError(
            f"skl2onnx cannot convert {describe_estimator(model)}: {_reason(exc)}"
        ) from None
    if any(
        type(step).__name__ == "CalibratedClassifierCV" and step.method == "isotonic"
        for _, step in _steps(model, "")
    ):
        proto = interpolate_isotonic(proto)
    return proto


def _custom_converters() -> dict[type, Any]:
    """skl2onnx converters this compiler supplies: k-NN as one node it lowers itself."""
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    return {
        KNeighborsClassifier: knn.skl2onnx_converter,
        KNeighborsRegressor: knn.skl2onnx_converter,
    }


def _selects_columns_by_name(model: Any) -> bool:
    """True when the step that sees the raw columns is a ColumnTransformer naming them."""
    while type(model).__name__ == "Pipeline":
        model = model.steps[0][1]
    if type(model).__name__ != "ColumnTransformer":
        return False
    for _, _, columns in getattr(model, "transformers_", []):
        listed = (
            [columns]
            if isinstance(columns, str)
            else list(columns)
            if hasattr(columns, "__iter__")
            else []
        )
        if any(isinstance(c, str) for c in listed):
            return True
    return False


def model_text_levels(model: Any) -> dict[str, list[str]]:
    """Text columns of a DataFrame pipeline and their levels: the ``categories_`` of each
    ``OneHotEncoder`` that a ``ColumnTransformer`` (the first step) applies to named
    string columns. The bundle takes them as the features' levels (a site mapping binds
    its local categories to them) and feeds the module the level's index."""
    while type(model).__name__ == "Pipeline":
        model = model.steps[0][1]
    levels: dict[str, list[str]] = {}
    if type(model).__name__ != "ColumnTransformer":
        return levels
    for _, transformer, columns in getattr(model, "transformers_", []):
        if type(transformer).__name__ != "OneHotEncoder" or isinstance(columns, str):
            continue
        for column, categories in zip(columns, transformer.categories_, strict=False):
            values = list(categories)
            if not isinstance(column, str) or not any(isinstance(v, str) for v in values):
                continue
            if not all(isinstance(v, str) for v in values):
                raise CompileError(
                    f"the OneHotEncoder's categories of {column!r} include a missing value; "
                    "impute it before encoding (the bundle feeds missing text as missing)"
                )
            levels[column] = values
    return levels


def describe_estimator(model: Any) -> str:
    """``Pipeline(StandardScaler, SVC)``: the estimator classes a data scientist wrote,
    for errors that name what was passed rather than a converter's internals."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        return f"{type(model).__name__}({', '.join(describe_estimator(s) for _, s in steps)})"
    return type(model).__name__


def _reason(exc: BaseException) -> str:
    """The first line of a converter's message, the part that says what it missed."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
