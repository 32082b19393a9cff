"""The reference CSV and the optional schema YAML: feature order, kinds, units, ranges,
levels, and the reference rows as a float matrix the module can be run on.

The CSV header names the features. When the model knows its features by name (an
estimator's ``feature_names_in_``, or an ONNX graph with one input per feature), the
header must name the same features and is put in the model's order (``in_model_order``);
otherwise the header order is the model's input order. Numeric cells are decimals; an
empty cell (or ``NA``/``NaN``) is missing. A categorical feature (one with ``levels`` in
the schema) holds level names in the CSV and is encoded as the level's index, which is
what the module is fed. Errors name the column and line, never a cell's content.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agent.bundle.manifest import FeatureKind, InputFeature
from agent.cells import UnreadableCell, encode
from agent.errors import CompileError

_SCHEMA_KEYS = {"unit", "min", "max", "levels"}
# Converters rewrite feature names into identifiers (skl2onnx input names, LightGBM's
# feature_name_): "mean radius" becomes "mean_radius". Names that agree once every other
# character is "_" are the same feature, if no two names of one side collide that way.
_NOT_IDENTIFIER = re.compile(r"[^0-9A-Za-z]")


@dataclass(frozen=True)
class ReferenceData:
    features: list[InputFeature]
    matrix: np.ndarray  # float64 [rows, features]; NaN = missing; categorical = level index
    sha256_source: bytes  # the CSV bytes, for the provenance digest

    def names(self) -> list[str]:
        return [f.name for f in self.features]


def in_model_order(data: ReferenceData, model_names: Sequence[str], source: str) -> ReferenceData:
    """``data`` with its columns in the order of ``model_names`` (what ``source``, e.g.
    "the estimator's feature_names_in_", says the model reads), matched by name, exactly
    or else once both sides are made identifiers. A column order that differs is fixed
    silently (the names say which column is which); names that do not match one to one
    raise ``CompileError`` naming both lists: a model fed its features in the wrong
    columns scores with full confidence and is wrong."""
    header = data.names()
    order = _match(list(model_names), header)
    if order is None:
        raise CompileError(
            f"feature names differ: {source} {list(model_names)}, the reference CSV header {header}"
        )
    if order == list(range(len(header))):
        return data
    return ReferenceData(
        [data.features[i] for i in order], data.matrix[:, order], data.sha256_source
    )


def _match(model_names: list[str], header: list[str]) -> list[int] | None:
    """For each model name, the index of its header column; None unless one to one."""
    for key in (str, lambda name: _NOT_IDENTIFIER.sub("_", name)):
        model_keys = [key(n) for n in model_names]
        header_keys = [key(n) for n in header]
        if len(set(model_keys)) == len(model_keys) == len(header_keys) == len(
            set(header_keys)
        ) and set(model_keys) == set(header_keys):
            return [header_keys.index(k) for k in model_keys]
    return None


def load_schema(schema: Path | Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``features: {name: {unit, min, max, levels}}`` from a YAML file or a mapping."""
    if schema is None:
        return {}
    if isinstance(schema, Path):
        try:
            document = yaml.safe_load(schema.read_text("utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CompileError(f"cannot read the schema {schema.name!r}") from exc
        except yaml.YAMLError as exc:
            raise CompileError(f"the schema {schema.name!r} is not valid YAML") from exc
    else:
        document = schema
    if not isinstance(document, Mapping) or not isinstance(document.get("features", {}), Mapping):
        raise CompileError("schema must be a mapping with a 'features' mapping")
    features: dict[str, dict[str, Any]] = {}
    for name, spec in dict(document.get("features") or {}).items():
        if not isinstance(spec, Mapping) or set(spec) - _SCHEMA_KEYS:
            raise CompileError(f"schema feature {name!r}: allowed keys are {sorted(_SCHEMA_KEYS)}")
        features[str(name)] = dict(spec)
    return features


def with_levels(
    schema: Mapping[str, Mapping[str, Any]], levels: Mapping[str, list[str]]
) -> dict[str, dict[str, Any]]:
    """``schema`` with the model's own ``levels`` of its text features (a OneHotEncoder's
    categories) added; a schema that gives other levels for one of them is refused."""
    merged = {name: dict(spec) for name, spec in schema.items()}
    for name, values in levels.items():
        spec = merged.setdefault(name, {})
        given = spec.get("levels")
        if given is not None and set(map(str, given)) != set(values):
            raise CompileError(
                f"schema levels of {name!r} {list(given)} differ from the model's categories "
                f"{values}"
            )
        spec.setdefault("levels", values)
    return merged


def load_reference(path: Path, schema: Mapping[str, Mapping[str, Any]]) -> ReferenceData:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CompileError(f"cannot read the reference CSV {path.name!r} as UTF-8") from exc
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CompileError("the reference CSV is empty") from None
    if len(set(header)) != len(header) or not all(header):
        raise CompileError("the reference CSV header has empty or duplicate names")
    unknown = set(schema) - set(header)
    if unknown:
        raise CompileError(
            f"schema names features missing from the reference: {sorted(unknown)} "
            f"(the reference CSV header: {header})"
        )
    features = [_feature(name, schema.get(name, {})) for name in header]
    rows: list[list[float]] = []
    for line, record in enumerate(reader, start=2):
        if not record:
            continue
        if len(record) != len(header):
            raise CompileError(
                f"reference CSV line {line} has {len(record)} cells, not {len(header)}"
            )
        rows.append([_cell(f, cell, line) for f, cell in zip(features, record, strict=True)])
    if not rows:
        raise CompileError("the reference CSV has no rows")
    return ReferenceData(features, np.asarray(rows, dtype=np.float64), raw)


def _feature(name: str, spec: Mapping[str, Any]) -> InputFeature:
    levels = [str(level) for level in spec.get("levels") or []]
    try:
        return InputFeature(
            name=name,
            kind=FeatureKind.categorical if levels else FeatureKind.numeric,
            unit=spec.get("unit"),
            min=spec.get("min"),
            max=spec.get("max"),
            levels=levels,
        )
    except ValueError as exc:
        raise CompileError(f"schema feature {name!r} is invalid") from exc


def _cell(feature: InputFeature, cell: str, line: int) -> float:
    """A reference cell read as every feature table is (``agent.cells``): NaN when missing."""
    try:
        return encode(feature, cell)
    except UnreadableCell as exc:
        raise CompileError(f"reference CSV line {line}: {feature.name!r} is {exc}") from None
