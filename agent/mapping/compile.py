"""``load_mapping``: read a site mapping YAML, check it against the model's manifest, and
compile it — or refuse it with every problem named by file, line and feature.

Checked here, so that nothing about the mapping can fail later at scoring time: the model
name; every model input bound and nothing else; codes well formed; categorical features
mapping onto the model's levels with a categorical reduction; units valid UCUM and
convertible to the model's unit (a mass <-> substance change needs ``molar_mass``);
``median`` only where the manifest has a training median; FHIRPath expressions parsing
and running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.bundle.manifest import BundleManifest, FeatureKind, InputFeature
from agent.errors import MappingError, UnitError
from agent.mapping.facts import WantedCodes
from agent.mapping.feature import CompiledFeature, Fallback
from agent.mapping.fhirpath import compile_fhirpath, reached_names
from agent.mapping.outcome import CompiledOutcome
from agent.mapping.site import SiteMapping
from agent.mapping.spec import (
    FeatureSpec,
    MappingSpec,
    MissingPolicy,
    PatientField,
    Reduction,
    ResourceKind,
    parse_window,
)
from agent.mapping.units import IDENTITY, check_unit, conversion
from agent.types import ElementReach
from agent.yamlfile import KeyPath as Path_
from agent.yamlfile import line_of, load_with_lines

_MAX_FILE = 1_000_000  # bytes: a mapping is hand-written configuration


class _Problems:
    """Problems found so far, each pinned to a line; raised together at the end."""

    def __init__(self, filename: str, lines: dict[Path_, int]) -> None:
        self.filename = filename
        self.lines = lines
        self.items: list[tuple[int, str, bool]] = []

    def add(
        self, path: Path_, message: str, feature: str | None = None, unit: bool = False
    ) -> None:
        where = f"feature {feature!r}: " if feature else ""
        self.items.append((line_of(self.lines, path), where + message, unit))

    def check(self) -> None:
        if not self.items:
            return
        text = "\n".join(
            f"{self.filename}:{line}: {message}"
            for line, message, _ in sorted(self.items, key=lambda i: i[0])
        )
        if all(unit for _, _, unit in self.items):
            raise UnitError(text)
        raise MappingError(text)


def load_mapping(path: Path, manifest: BundleManifest) -> SiteMapping:
    """Load ``path`` for the model ``manifest`` describes; MappingError (UnitError when every
    problem is a unit) listing each problem as ``file:line: feature 'x': why``."""
    filename = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MappingError(f"{filename}: cannot read ({exc.strerror})") from None
    if len(raw) > _MAX_FILE:
        raise MappingError(f"{filename}: larger than {_MAX_FILE} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MappingError(f"{filename}: not UTF-8") from None
    document, lines = load_with_lines(text, filename, MappingError)
    problems = _Problems(filename, lines)
    try:
        spec = MappingSpec.model_validate(document)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            feature = str(loc[1]) if len(loc) > 1 and loc[0] == "features" else None
            problems.add(loc, error["msg"].removeprefix("Value error, "), feature)
        problems.check()
        raise  # unreachable: check() raised
    if spec.model != manifest.name:
        problems.add(
            ("model",), f"mapping is for model {spec.model!r}, the bundle is {manifest.name!r}"
        )
    inputs = {f.name: f for f in manifest.inputs}
    for name in inputs.keys() - spec.features.keys():
        problems.add(("features",), "model input is not mapped", name)
    for name in spec.features.keys() - inputs.keys():
        problems.add(("features", name), "not an input of the model", name)
    for text, ucum in spec.unit_aliases.items():
        try:
            check_unit(ucum)
        except UnitError as exc:
            problems.add(("unit_aliases", text), f"unit_aliases: {exc}", unit=True)
    compiled: dict[str, CompiledFeature] = {}
    for name, feature_spec in spec.features.items():
        if name in inputs:
            built = _compile(name, feature_spec, inputs[name], spec, manifest, problems)
            if built is not None:
                compiled[name] = built
    outcome = None
    if spec.outcome is not None:
        codes = _codes(
            spec.outcome.codes, "codes", spec, problems, None, lambda *keys: ("outcome", *keys)
        )
        outcome = CompiledOutcome(
            frozenset(codes), spec.outcome.deceased, parse_window(spec.outcome.horizon)
        )
    problems.check()
    return SiteMapping(
        path=path,
        site=spec.site,
        model=manifest.name,
        features=tuple(compiled[f.name] for f in manifest.inputs),
        wanted_codes=WantedCodes(frozenset(c for f in compiled.values() for c in f.codes)),
        max_imputed=spec.imputation_budget(len(manifest.inputs)),
        outcome=outcome,
        reach=_reach(spec, compiled.values()),
    )


def _reach(spec: MappingSpec, compiled: Iterable[CompiledFeature]) -> ElementReach:
    """Per resource type, the names its FHIRPath features use (None: any element), and the
    codes whose Observations the features read (None: every Observation, when a FHIRPath
    feature reads them all), so that validation checks every element a feature can read
    (``agent.types.ElementReach``)."""
    reach: dict[str, frozenset[str] | None] = {}
    every_observation = False
    for feature in spec.features.values():
        if feature.fhirpath is None:
            continue
        kind = feature.resource.value
        names = reached_names(feature.fhirpath)
        before = reach.get(kind, frozenset())
        reach[kind] = None if names is None or before is None else before | names
        every_observation |= feature.resource is ResourceKind.Observation and not feature.codes
    codes = frozenset(
        (system, code)
        for feature in compiled
        for system, _, code in (text.partition("|") for text in feature.codes)
    )
    return ElementReach(
        tuple(sorted(reach.items(), key=lambda item: item[0])),
        None if every_observation else codes,
    )


def _compile(
    name: str,
    spec: FeatureSpec,
    model: InputFeature,
    mapping: MappingSpec,
    manifest: BundleManifest,
    problems: _Problems,
) -> CompiledFeature | None:
    """One feature; problems go to ``problems`` and the result is then None."""
    before = len(problems.items)

    def at(*keys: str | int) -> Path_:
        return ("features", name, *keys)

    categorical = model.kind is FeatureKind.categorical

    codes = _codes(spec.codes, "codes", mapping, problems, name, at)
    panels = _codes(spec.panel, "panel", mapping, problems, name, at)

    if spec.patient is PatientField.gender and not categorical:
        problems.add(at("patient"), "patient: gender needs a categorical model input", name)
    if spec.patient is PatientField.age and categorical:
        problems.add(at("patient"), "patient: age needs a numeric model input", name)
    if spec.patient is not None and (spec.unit or spec.molar_mass):
        problems.add(at("unit"), "unit and molar_mass do not apply to patient fields", name)

    categories: dict[str, int] = {}
    if categorical:
        if spec.reduce not in (Reduction.latest, Reduction.first):
            problems.add(at("reduce"), "a categorical feature reduces by latest or first", name)
        if spec.unit or spec.molar_mass:
            problems.add(at("unit"), "a categorical feature has no unit", name)
        if not spec.categories:
            problems.add(
                at(), f"categories must map site values to the levels {model.levels}", name
            )
        for local, level in spec.categories.items():
            if level not in model.levels:
                problems.add(
                    at("categories", local),
                    f"{level!r} is not a level of the model ({', '.join(model.levels)})",
                    name,
                )
            else:
                categories[local] = model.levels.index(level)
    elif spec.categories:
        problems.add(at("categories"), "categories apply to categorical inputs only", name)

    site_unit, site_conversion = _units(spec, model, problems, name, at)
    fallback = _fallback(spec, model, manifest, problems, name, at)

    evaluator = None
    if spec.fhirpath is not None:
        try:
            evaluator = compile_fhirpath(spec.fhirpath, spec.resource.value)
        except ValueError as exc:
            problems.add(at("fhirpath"), str(exc), name)

    if len(problems.items) > before:
        return None
    return CompiledFeature(
        name=name,
        categorical=categorical,
        codes=tuple(codes),
        panels=frozenset(panels),
        patient=spec.patient,
        fhirpath=evaluator,
        resource=spec.resource,
        site_unit=site_unit,
        model_unit=model.unit,
        site_conversion=site_conversion,
        molar_mass=spec.molar_mass,
        reduce=spec.reduce,
        window=spec.window_delta,
        fallback=fallback,
        levels=tuple(model.levels),
        categories=categories,
        unseen=spec.unseen,
        low=spec.range[0] if spec.range else model.min,
        high=spec.range[1] if spec.range else model.max,
        out_of_range=spec.out_of_range,
        unit_aliases=mapping.unit_aliases,
    )


def _codes(
    texts: list[str],
    key: str,
    mapping: MappingSpec,
    problems: _Problems,
    name: str | None,
    at: Callable[..., Path_],
) -> list[str]:
    out = []
    for i, text in enumerate(texts):
        try:
            system, code = mapping.resolve_code(text)
        except ValueError as exc:
            problems.add(at(key, i), str(exc), name)
        else:
            out.append(f"{system}|{code}")
    return out


def _units(
    spec: FeatureSpec, model: InputFeature, problems: _Problems, name: str, at: Callable[..., Path_]
) -> tuple[str | None, Any]:
    """The site unit and its conversion to the model unit (age: years to the model unit)."""
    if model.kind is FeatureKind.categorical or spec.reduce is Reduction.count:
        return None, IDENTITY
    if model.unit is None:
        if spec.unit is not None:
            problems.add(at("unit"), "the model input has no unit to convert to", name)
        return None, IDENTITY
    try:
        check_unit(model.unit)
    except UnitError as exc:
        problems.add(at(), f"the model's unit: {exc}", name, unit=True)
        return None, IDENTITY
    source = "a" if spec.patient is PatientField.age else (spec.unit or model.unit)
    try:
        return source, conversion(source, model.unit, spec.molar_mass)
    except UnitError as exc:
        problems.add(at("unit"), str(exc), name, unit=True)
        return None, IDENTITY


def _fallback(
    spec: FeatureSpec,
    model: InputFeature,
    manifest: BundleManifest,
    problems: _Problems,
    name: str,
    at: Callable[..., Path_],
) -> Fallback | None:
    categorical = model.kind is FeatureKind.categorical
    if spec.missing is MissingPolicy.refuse:
        return None
    if spec.missing is MissingPolicy.constant:
        if categorical:
            if spec.constant not in model.levels:
                problems.add(at("constant"), "constant must be one of the model's levels", name)
                return None
            level = str(spec.constant)
            return Fallback(float(model.levels.index(level)), level, "imputed constant")
        if not isinstance(spec.constant, int | float):
            problems.add(at("constant"), "constant must be a number in the model's unit", name)
            return None
        return Fallback(float(spec.constant), float(spec.constant), "imputed constant")
    reference = manifest.reference.features.get(name)
    if categorical and reference is not None and reference.category_frequencies:
        known = {k: v for k, v in reference.category_frequencies.items() if k in model.levels}
        if known:
            level = max(known, key=lambda k: known[k])
            return Fallback(
                float(model.levels.index(level)), level, "imputed most frequent training level"
            )
    if reference is None or reference.median is None:
        problems.add(
            at("missing"),
            "missing: median, but the bundle has no training median for this input",
            name,
        )
        return None
    if categorical:
        index = round(reference.median)
        if not 0 <= index < len(model.levels):
            problems.add(at("missing"), "the training median is not a level index", name)
            return None
        return Fallback(float(index), model.levels[index], "imputed training median")
    return Fallback(reference.median, reference.median, "imputed training median")
