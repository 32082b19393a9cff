"""The site mapping file, as typed data: one ``FeatureSpec`` per model input.

This module says what a mapping file may contain and checks what can be checked without
the model (shape, one data source per feature, well-formed codes and windows). Whether it
fits the model — every input bound, units convertible, levels known — is ``compile.py``'s
job, because that needs the manifest. Every field is documented in docs/mapping.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUILTIN_SYSTEMS: dict[str, str] = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "ucum": "http://unitsofmeasure.org",
}

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|min|h|d|w)\s*$")
_WINDOW_UNIT = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class Reduction(Enum):
    latest = "latest"
    first = "first"
    mean = "mean"
    min = "min"
    max = "max"
    count = "count"


class MissingPolicy(Enum):
    refuse = "refuse"  # UnmappableRecord
    median = "median"  # the training median (categorical: the most frequent level)
    constant = "constant"  # the feature's ``constant``


class UnseenPolicy(Enum):
    refuse = "refuse"
    missing = "missing"  # treat as missing: the missing policy decides


class RangePolicy(Enum):
    """What a value outside the feature's plausible range gets."""

    refuse = "refuse"  # the patient is refused (out_of_range): a wrong unit, a typo
    clip = "clip"  # clipped to the nearest bound, flagged in the answer
    flag = "flag"  # scored as read, flagged in the answer


class PatientField(Enum):
    age = "age"  # completed years from Patient.birthDate at the as-of time
    gender = "gender"  # Patient.gender


class ResourceKind(Enum):
    Observation = "Observation"
    Patient = "Patient"
    Encounter = "Encounter"


def parse_window(text: str) -> timedelta:
    """``24h``, ``30min``, ``7d``, ``2w``, ``90s`` -> timedelta."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError("window must be a number and one of s, min, h, d, w (e.g. 24h)")
    return timedelta(seconds=float(match[1]) * _WINDOW_UNIT[match[2]])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """How one model input is found in a record. Exactly one source: ``codes`` (optionally
    with ``fhirpath`` to pick the value), ``fhirpath`` alone, or ``patient``."""

    codes: list[str] = Field(default_factory=list)
    panel: list[str] = Field(default_factory=list)
    patient: PatientField | None = None
    fhirpath: str | None = None
    resource: ResourceKind = ResourceKind.Observation
    unit: str | None = None
    molar_mass: float | None = Field(default=None, gt=0)
    reduce: Reduction = Reduction.latest
    window: str | None = None
    missing: MissingPolicy = MissingPolicy.refuse
    constant: float | str | None = None
    categories: dict[str, str] = Field(default_factory=dict)
    unseen: UnseenPolicy = UnseenPolicy.refuse
    range: tuple[float, float] | None = None
    """Plausible range in the model's unit, replacing the manifest's (narrow or widen it)."""
    out_of_range: RangePolicy = RangePolicy.refuse
    """What a value outside the plausible range gets."""

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FeatureSpec:
        if self.patient is not None and (self.codes or self.fhirpath or self.panel):
            raise ValueError("patient cannot be combined with codes, panel or fhirpath")
        if self.patient is None and not self.codes and self.fhirpath is None:
            raise ValueError("give codes, fhirpath or patient")
        if self.panel and not self.codes:
            raise ValueError("panel needs codes: the component codes inside the panel")
        if self.resource is not ResourceKind.Observation and (self.codes or self.fhirpath is None):
            raise ValueError("resource applies to a fhirpath without codes")
        if self.missing is MissingPolicy.constant and self.constant is None:
            raise ValueError("missing: constant needs a constant")
        if self.missing is not MissingPolicy.constant and self.constant is not None:
            raise ValueError("constant is used only with missing: constant")
        if self.window is not None and self.patient is not None:
            raise ValueError("window does not apply to patient fields")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError("range must be [low, high] with low < high")
        return self

    @property
    def window_delta(self) -> timedelta | None:
        return parse_window(self.window) if self.window is not None else None


class OutcomeSpec(_Strict):
    """How ``edge-agent validate`` reads the outcome from records (docs/validation.md): it
    happened when, after the scored time and within ``horizon`` of it, an Observation or
    an Encounter carries one of ``codes``, or (with ``deceased``) the patient died."""

    codes: list[str] = Field(default_factory=list)
    deceased: bool = False
    horizon: str

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, value: str) -> str:
        parse_window(value)
        return value

    @model_validator(mode="after")
    def _some_event(self) -> OutcomeSpec:
        if not self.codes and not self.deceased:
            raise ValueError("give codes, deceased: true, or both")
        return self


class MappingSpec(_Strict):
    """A whole mapping file: one site, one model."""

    site: str = Field(min_length=1)
    model: str = Field(min_length=1)
    description: str = ""
    systems: dict[str, str] = Field(default_factory=dict)
    unit_aliases: dict[str, str] = Field(default_factory=dict)
    features: dict[str, FeatureSpec]
    outcome: OutcomeSpec | None = None  # only validation reads it; serving ignores it
    max_imputed: int | float | None = Field(default=None, ge=0)
    """How many features one patient may have imputed before it is refused
    (``too_much_imputed``): a whole number is a count, a number below 1 a fraction of the
    model's features. Default: half of them."""

    @field_validator("max_imputed")
    @classmethod
    def _budget(cls, value: int | float | None) -> int | float | None:
        if isinstance(value, float) and value >= 1 and not value.is_integer():
            raise ValueError("max_imputed is a count (a whole number) or a fraction below 1")
        return value

    def imputation_budget(self, features: int) -> int:
        """The largest number of imputed features a patient may have."""
        if self.max_imputed is None:
            return features // 2
        if isinstance(self.max_imputed, float) and self.max_imputed < 1:
            return int(self.max_imputed * features)
        return int(self.max_imputed)

    @field_validator("systems")
    @classmethod
    def _uris(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, uri in value.items():
            if ":" not in uri:
                raise ValueError(f"system {alias!r} must map to a URI")
            if "|" in alias or ":" in alias:
                raise ValueError(f"system alias {alias!r} may not contain '|' or ':'")
        return value

    def resolve_code(self, text: str) -> tuple[str, str]:
        """``loinc|8867-4`` or ``http://loinc.org|8867-4`` -> (system URI, code)."""
        return resolve_code(text, self.systems)


def resolve_code(text: str, systems: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``loinc|8867-4`` or ``http://loinc.org|8867-4`` -> (system URI, code): an alias is
    one of ``systems`` (a mapping file's own) or built in. Also read by the MLLP outcome
    messages, so a code is written the same way everywhere."""
    system, sep, code = text.partition("|")
    if not sep or not system or not code:
        raise ValueError(f"code {text!r} must be written system|code")
    if ":" in system:
        return system, code
    uri = (systems or {}).get(system) or BUILTIN_SYSTEMS.get(system)
    if uri is None:
        raise ValueError(f"code system alias {system!r} is neither built in nor in systems")
    return uri, code
