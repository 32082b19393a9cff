"""``build``: a trained model + its reference data -> an unsigned bundle directory.

One call does it all: convert (``convert.to_onnx_model``), lower the ONNX graph to WAT,
assemble with ``wasmtime.wat2wasm`` (no external toolchain), load the result in the real
runtime, run it on the reference rows for the output statistics, and write ``model.wasm``
and ``manifest.json`` (canonical bytes). Signing is a separate step
(``edge-agent bundle sign``); a stale ``manifest.sig`` in ``out`` is removed, because it
cannot match the new manifest.
"""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import wasmtime
import yaml
from pydantic import ValidationError

from agent.bundle.explain import EXPLAIN_FILE
from agent.bundle.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    SIGNATURE_FILE,
    BundleManifest,
    FileEntry,
    ModelCard,
    OutputKind,
    Provenance,
    ReferenceStats,
    SemVer,
    ValueReference,
    canonical_json,
    check_model_name,
    first_invalid_field,
)
from agent.compiler.convert import (
    describe_estimator,
    load_model,
    model_feature_names,
    model_text_levels,
    to_onnx_model,
)
from agent.compiler.dataset import (
    ReferenceData,
    in_model_order,
    load_reference,
    load_schema,
    with_levels,
)
from agent.compiler.emit import emit_module
from agent.compiler.explain_data import check_adds_up, explain_document
from agent.compiler.fidelity import check_against_library
from agent.compiler.graph import lower
from agent.compiler.reference import categorical_reference, numeric_reference
from agent.compiler.signature import (
    OutputDeclaration,
    Signature,
    declared_signature,
    parse_declaration,
    signature,
)
from agent.durable import write_atomic
from agent.errors import CompileError
from agent.limits import Limits
from agent.runtime import abi
from agent.runtime.model import WasmModel

DEFAULT_MAX_BATCH = 1024
# Input plus output regions stay within this many bytes, so a wide model lowers max_batch
# instead of asking for more memory than the runtime's cap (64 MiB by default) allows.
IO_REGION_BUDGET = 8 * 1024 * 1024


@dataclass(frozen=True)
class CompiledModel:
    wasm: bytes
    signature: Signature
    n_features: int


def compile_onnx(
    model: onnx.ModelProto,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    outputs: Sequence[OutputDeclaration] | None = None,
    input_levels: Sequence[Sequence[str]] | None = None,
) -> CompiledModel:
    """Lower and assemble an ONNX model into an ABI v1 module. ``max_batch`` is lowered for
    very wide models so the input and output regions fit ``IO_REGION_BUDGET``; ``outputs``
    declares what the graph's outputs are (see ``signature``), else they are inferred;
    ``input_levels`` the levels of text inputs, per graph input (see ``graph.lower``)."""
    graph = lower(model, input_levels)
    sig = signature(graph) if outputs is None else declared_signature(graph, outputs)
    row_bytes = 4 * (graph.n_features + len(sig.outputs))
    max_batch = max(1, min(max_batch, IO_REGION_BUDGET // row_bytes))
    wat = emit_module(graph.program, graph.input, sig.values, max_batch)
    try:
        wasm = bytes(wasmtime.wat2wasm(wat))
    except wasmtime.WasmtimeError as exc:  # a compiler bug, never a user error
        raise CompileError("internal error: generated WAT did not assemble") from exc
    return CompiledModel(wasm, sig, graph.n_features)


def build(
    model: Any,
    *,
    reference: Path | str,
    name: str,
    version: str,
    out: Path | str,
    schema: Path | str | Mapping[str, Any] | None = None,
    creator: str | None = None,
    description: str = "",
    metrics: Mapping[str, float] | None = None,
    outputs: Sequence[str] | None = None,
    card: Path | str | Mapping[str, Any] | ModelCard | None = None,
) -> Path:
    """Compile ``model`` (an ``onnx.ModelProto``, a path to ``.onnx``, or a fitted
    scikit-learn estimator/pipeline or XGBoost/LightGBM estimator, see ``convert``) into
    the bundle directory ``out``; returns ``out``.

    ``reference`` is the training reference CSV, its header naming the features. If the
    model knows its features by name (``feature_names_in_`` of an estimator fitted on a
    DataFrame, or an ONNX graph with one input per feature), the header must name the
    same features, in any order: the bundle reads them in the model's order. Otherwise
    the header order is the model's input order. Raises ``CompileError`` for anything
    that cannot be compiled faithfully; ``name`` and ``version`` are checked first, and
    nothing is written to ``out`` unless the whole bundle is.

    ``outputs`` declares, for an ONNX model, what each graph output is, e.g.
    ``["probability:classes=no,yes"]`` (see ``signature``); without it a hand-made graph's
    outputs are scores named ``value_<i>``. Estimators declare their own outputs.

    ``card``: the model card (a YAML file, a mapping or a ``ModelCard``: intended use,
    training population, limitations...), signed with the manifest.
    """
    check_identity(name, version)
    model_card = load_card(card)
    declared = None if outputs is None else [parse_declaration(text) for text in outputs]
    schema_spec = load_schema(Path(schema) if isinstance(schema, str | Path) else schema)
    model = load_model(model)
    text = {} if isinstance(model, onnx.ModelProto) else model_text_levels(model)
    data = load_reference(Path(reference), with_levels(schema_spec, text))
    named = model_feature_names(model)
    if named is not None:
        data = in_model_order(data, *named)
    proto, source = to_onnx_model(model, len(data.features))
    if declared is not None and source != "onnx":
        raise CompileError("outputs are declared only for ONNX models; estimators name their own")
    try:
        compiled = compile_onnx(
            proto, outputs=declared, input_levels=[f.levels for f in data.features]
        )
    except CompileError as exc:
        if source == "onnx":
            raise
        raise CompileError(
            f"cannot compile {describe_estimator(model)}: {exc} (supported estimators: "
            "docs/compiler.md)"
        ) from None
    if compiled.n_features != len(data.features):
        raise CompileError(
            f"the model reads {compiled.n_features} features, the reference has "
            f"{len(data.features)} columns"
        )
    filled = _imputed(data)
    predictions = _run(compiled, filled)
    explain: bytes | None = None
    if source != "onnx":
        check_against_library(model, filled, predictions, compiled.signature, named, text)
        explain = _explain_bytes(model, compiled, data, filled, predictions)
    stats = _reference_stats(compiled, data, predictions)
    files = {MODEL_FILE: compiled.wasm} | ({} if explain is None else {EXPLAIN_FILE: explain})
    manifest = BundleManifest(
        name=name,
        version=version,
        abi_version=abi.ABI_VERSION,
        description=description,
        inputs=data.features,
        outputs=compiled.signature.outputs,
        reference=stats,
        provenance=Provenance(
            training_data_sha256=hashlib.sha256(data.sha256_source).hexdigest(),
            creator=creator or _default_creator(),
            created=datetime.now(UTC).replace(microsecond=0),
            metrics=dict(metrics or {}),
            source=source,
        ),
        files={
            file: FileEntry(sha256=hashlib.sha256(content).hexdigest(), size=len(content))
            for file, content in files.items()
        },
        card=model_card,
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for file, content in files.items():
        write_atomic(out_dir / file, content)
    if explain is None:  # a stale one from an earlier build would not match the manifest
        (out_dir / EXPLAIN_FILE).unlink(missing_ok=True)
    write_atomic(out_dir / MANIFEST_FILE, manifest.canonical_bytes())
    (out_dir / SIGNATURE_FILE).unlink(missing_ok=True)
    return out_dir


def load_card(card: Path | str | Mapping[str, Any] | ModelCard | None) -> ModelCard | None:
    """A model card from a YAML file or a mapping, checked before any compiling; a
    ``CompileError`` names the field that is wrong."""
    if card is None or isinstance(card, ModelCard):
        return card
    if isinstance(card, str | Path):
        path = Path(card)
        try:
            document = yaml.safe_load(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CompileError(f"cannot read the model card {path.name!r}") from exc
        except yaml.YAMLError as exc:
            raise CompileError(f"the model card {path.name!r} is not valid YAML") from exc
    else:
        document = card
    try:
        return ModelCard.model_validate(document)
    except ValidationError as exc:
        raise CompileError(f"invalid model card {first_invalid_field(exc)}") from None


def check_identity(name: str, version: str) -> None:
    """``CompileError`` in one line unless ``name`` is a valid model name and ``version``
    a semantic version: checked before any compiling, so a typo costs nothing."""
    try:
        check_model_name(name)
    except ValueError as exc:
        raise CompileError(f"name {name!r}: {exc}") from None
    try:
        SemVer(version)
    except ValueError as exc:
        raise CompileError(f"version: {exc}") from None


def _imputed(data: ReferenceData) -> np.ndarray:
    """The reference rows with missing values imputed by the reference median (the most
    frequent level for a categorical feature): what a site mapping configured with
    ``median`` feeds the model."""
    filled = data.matrix.copy()
    for j, feature in enumerate(data.features):
        column = data.matrix[:, j]
        present = column[~np.isnan(column)]
        if present.size == 0:
            fill = 0.0
        elif feature.levels:
            fill = float(np.argmax(np.bincount(present.astype(np.int64))))
        else:
            fill = float(np.median(present))
        filled[np.isnan(column), j] = fill
    return filled


def _explain_bytes(
    model: Any,
    compiled: CompiledModel,
    data: ReferenceData,
    filled: np.ndarray,
    predictions: np.ndarray,
) -> bytes | None:
    """``explain.json`` for an estimator whose contributions are exact (checked to add up
    to the module's output on the reference rows), None for the others."""
    document = explain_document(model, compiled.signature.outputs, filled)
    if isinstance(document, str):
        return None
    names = [o.name for o in compiled.signature.outputs]
    features = [f.name for f in data.features]
    check_adds_up(document, features, names.index(document.output), filled, predictions)
    return canonical_json(document.model_dump(mode="json"))


def _run(compiled: CompiledModel, rows: np.ndarray) -> np.ndarray:
    runtime = WasmModel.load(compiled.wasm, limits=Limits())
    return np.asarray(runtime.predict(rows.tolist()), dtype=np.float64)


def _reference_stats(
    compiled: CompiledModel, data: ReferenceData, predictions: np.ndarray
) -> ReferenceStats:
    """Feature statistics, and output statistics of the compiled module's ``predictions``
    for the imputed reference rows."""
    features: dict[str, ValueReference] = {}
    for j, feature in enumerate(data.features):
        column = data.matrix[:, j]
        features[feature.name] = (
            categorical_reference(column, feature.levels)
            if feature.levels
            else numeric_reference(column)
        )
    outputs: dict[str, ValueReference] = {}
    for k, spec in enumerate(compiled.signature.outputs):
        if spec.kind is OutputKind.label:
            outputs[spec.name] = categorical_reference(predictions[:, k], spec.classes)
        else:
            outputs[spec.name] = numeric_reference(predictions[:, k])
    return ReferenceStats(rows=int(data.matrix.shape[0]), features=features, outputs=outputs)


def _default_creator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
