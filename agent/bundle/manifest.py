"""The bundle manifest: the one signed document that says what a model is and what it needs.

The signature covers the exact bytes of ``manifest.json``; the manifest covers every other
file by SHA-256 and size. ``canonical_bytes`` is how a builder writes the file, so that the
same manifest always serialises to the same bytes (sorted keys, no spaces, UTF-8).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from functools import total_ordering
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
MODEL_FILE = "model.wasm"

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@total_ordering
class SemVer:
    """MAJOR.MINOR.PATCH, compared numerically (rollback protection depends on it)."""

    __slots__ = ("major", "minor", "patch")

    def __init__(self, text: str) -> None:
        match = _SEMVER.match(text)
        if match is None:
            raise ValueError(f"not a semantic version MAJOR.MINOR.PATCH: {text!r}")
        self.major, self.minor, self.patch = (int(g) for g in match.groups())

    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SemVer) and self.key() == other.key()

    def __lt__(self, other: SemVer) -> bool:
        return self.key() < other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def _check_semver(value: str) -> str:
    SemVer(value)
    return value


def check_model_name(value: str) -> str:
    """``value`` if it is a valid model name (it becomes a folder name in the store and a
    path segment in registries), else ``ValueError``."""
    if not _NAME.match(value):
        raise ValueError("model name must be lowercase letters, digits, '.', '_' or '-'")
    return value


SemVerText = Annotated[str, AfterValidator(_check_semver)]
"""A str field that must be MAJOR.MINOR.PATCH (manifests, registry indexes)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureKind(StrEnum):
    numeric = "numeric"
    categorical = "categorical"


class InputFeature(_Strict):
    """One model input, in the order the module reads them.

    A categorical feature is fed to the module as the index of its level in ``levels``
    (0.0, 1.0, ...); the ONNX graph does any one-hot encoding itself.
    """

    name: str
    kind: FeatureKind = FeatureKind.numeric
    unit: str | None = Field(default=None, description="UCUM unit the model was trained in")
    min: float | None = Field(default=None, description="lowest plausible value")
    max: float | None = Field(default=None, description="highest plausible value")
    levels: list[str] = Field(default_factory=list, description="categorical levels, in code order")

    @model_validator(mode="after")
    def _levels_match_kind(self) -> InputFeature:
        if self.kind is FeatureKind.categorical and not self.levels:
            raise ValueError(f"categorical feature {self.name!r} needs levels")
        if self.kind is FeatureKind.numeric and self.levels:
            raise ValueError(f"numeric feature {self.name!r} cannot have levels")
        return self


class OutputKind(StrEnum):
    probability = "probability"
    score = "score"
    label = "class"


class OutputSpec(_Strict):
    """One output column of the module, in ABI order."""

    name: str
    kind: OutputKind
    class_label: str | None = Field(default=None, description="the class a probability is of")
    classes: list[str] = Field(
        default_factory=list, description="for kind=class: the label of each class index"
    )


class Histogram(_Strict):
    """Reference distribution of a numeric value: bin edges from the reference quantiles
    and the fraction of non-missing reference rows in each of the len(edges)+1 bins
    (below the first edge, between edges, above the last)."""

    edges: list[float]
    fractions: list[float]

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        if len(self.fractions) != len(self.edges) + 1:
            raise ValueError("a histogram needs len(edges) + 1 fractions")
        return self


class ValueReference(_Strict):
    """Training statistics of one feature or output, used for imputation and drift."""

    count: int
    missing_rate: float = 0.0
    median: float | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    histogram: Histogram | None = None
    category_frequencies: dict[str, float] = Field(default_factory=dict)


class ReferenceStats(_Strict):
    rows: int
    features: dict[str, ValueReference]
    outputs: dict[str, ValueReference] = Field(default_factory=dict)


class Provenance(_Strict):
    training_data_sha256: str
    creator: str
    created: datetime
    metrics: dict[str, float] = Field(default_factory=dict)
    source: str = Field(default="", description="what the model was compiled from, e.g. onnx")


class ModelCard(_Strict):
    """What the model is for and where it must not be used, for clinicians and the model
    governance committee: signed with the manifest, shown by ``bundle inspect --card``,
    ``/v1/models`` and the status page. Every field is optional."""

    intended_use: str = Field(default="", description="the decision the model supports")
    intended_users: str = Field(default="", description="who acts on its output")
    outcome: str = Field(default="", description="what the model predicts, defined exactly")
    training_population: str = Field(default="", description="on whom it was trained")
    training_period: str = Field(default="", description="when the training data was taken")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="training and validation metrics, subgroups included "
        "(e.g. validation.auroc, validation.female.auroc)",
    )
    limitations: list[str] = Field(default_factory=list, description="known limitations")
    contraindications: list[str] = Field(
        default_factory=list, description="uses it must not be put to"
    )
    contact: str = Field(default="", description="who answers questions about the model")
    history: list[str] = Field(default_factory=list, description="version history, newest first")


class FileEntry(_Strict):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]


class BundleManifest(_Strict):
    """What a bundle is. Signed as the exact bytes of manifest.json."""

    format_version: int = FORMAT_VERSION
    name: str
    version: SemVerText
    abi_version: int
    description: str = ""
    inputs: list[InputFeature]
    outputs: list[OutputSpec]
    reference: ReferenceStats
    provenance: Provenance
    files: dict[str, FileEntry]
    card: ModelCard | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("format_version")
    @classmethod
    def _format(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(f"unsupported manifest format_version {value}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> BundleManifest:
        for what, names in (
            ("input", [f.name for f in self.inputs]),
            ("output", [o.name for o in self.outputs]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {what} names")
        if MODEL_FILE not in self.files:
            raise ValueError(f"files must list {MODEL_FILE}")
        return self

    @property
    def semver(self) -> SemVer:
        return SemVer(self.version)

    def feature_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    def reference_row(self) -> list[float]:
        """A typical input in manifest order, from the training reference: each numeric
        feature's median (else mean, else the middle of its valid range, else 0), each
        categorical feature's most frequent level index (else 0). The row a module must
        score before it is activated."""
        row = []
        for feature in self.inputs:
            ref = self.reference.features.get(feature.name)
            if feature.kind is FeatureKind.categorical:
                frequencies = ref.category_frequencies if ref is not None else {}
                known = {lv: f for lv, f in frequencies.items() if lv in feature.levels}
                top = max(known, key=known.__getitem__) if known else feature.levels[0]
                row.append(float(feature.levels.index(top)))
                continue
            middle = (
                (feature.min + feature.max) / 2
                if feature.min is not None and feature.max is not None
                else None
            )
            candidates = (ref.median, ref.mean) if ref is not None else ()
            row.append(next((v for v in (*candidates, middle) if v is not None), 0.0))
        return row

    def canonical_bytes(self) -> bytes:
        # a manifest without a card keeps the bytes it had before cards existed
        return canonical_json(
            self.model_dump(mode="json", exclude={"card"} if self.card is None else None)
        )


def card_lines(card: ModelCard | None) -> list[str]:
    """A model card as text lines, every field labelled (for ``bundle inspect --card``)."""
    if card is None:
        return ["card:       none (build with --card CARD.yaml)"]
    lines = []
    for field, value in card.model_dump().items():
        label = f"{field.replace('_', ' ')}:"
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {v:g}" for k, v in value.items())
            lines.append(f"{label:<21}{shown or '-'}")
        elif isinstance(value, list):
            lines.append(f"{label:<21}{'-' if not value else ''}")
            lines.extend(f"  - {item}" for item in value)
        else:
            lines.append(f"{label:<21}{value or '-'}")
    return lines


def canonical_json(document: Any) -> bytes:
    """Deterministic JSON: sorted keys, no insignificant white space, UTF-8."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def first_invalid_field(exc: ValidationError) -> str:
    """``at <path>: <error type>`` for the first problem pydantic found: names the field,
    never the value (a signed document's text is not echoed into errors or logs)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "document"
    return f"at {where}: {first['type']}"
