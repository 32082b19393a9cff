"""One compiled feature: where its values come from, how they become one number in the
model's unit or level index, and what a missing or unseen value gets.

Built by ``compile.py`` from a checked ``FeatureSpec``; used by ``SiteMapping.extract``.
Nothing in here names a value in an error: only the feature, the resource type and code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from operator import attrgetter, itemgetter
from statistics import fmean
from typing import Any

from agent.errors import (
    ImplausibleValue,
    MissingValue,
    UnconvertibleUnit,
    UnitError,
    UnmappableRecord,
    UnseenCategory,
)
from agent.mapping.facts import Fact, FactIndex, dated, last_day, parse_time, value_of
from agent.mapping.fhirpath import Evaluator
from agent.mapping.spec import PatientField, RangePolicy, Reduction, ResourceKind, UnseenPolicy
from agent.mapping.timing import completed_years, hours, unplaced, within
from agent.mapping.units import Conversion, check_unit, conversion
from agent.types import FeatureValue, PatientRecord

Reducer = Callable[[list[float]], float]  # values in time order -> one


@dataclass(frozen=True)
class Fallback:
    """What a missing value becomes (None: refuse)."""

    value: float
    display: str | float
    source: str  # "imputed median" / "imputed constant"


@dataclass(frozen=True)
class FeatureSurvey:
    """One feature on one record, as ``survey`` found it (no values: counts only)."""

    name: str
    found: bool  # at least one value within the window
    outcome: str  # "read", "imputed", or the refusal's reason (missing, out_of_range...)
    converted: bool  # a unit conversion was applied
    out_of_range: bool  # scored but outside the plausible range (clip / flag)
    hours_beyond_window: float | None  # the newest value's age past the window, if only
    # values outside the window exist


@dataclass(frozen=True)
class CompiledFeature:
    name: str
    categorical: bool
    codes: tuple[str, ...]  # "system|code"
    panels: frozenset[str]
    patient: PatientField | None
    fhirpath: Evaluator | None
    resource: ResourceKind
    site_unit: str | None  # assumed when a value carries no unit
    model_unit: str | None
    site_conversion: Conversion  # site_unit -> model_unit
    molar_mass: float | None
    reduce: Reduction
    window: timedelta | None
    fallback: Fallback | None
    levels: tuple[str, ...]
    categories: dict[str, int]  # site label -> level index
    unseen: UnseenPolicy
    low: float | None
    high: float | None
    out_of_range: RangePolicy
    unit_aliases: Mapping[str, str]  # the site's unit texts -> UCUM (mmHg -> mm[Hg])
    # worked out from the fields above once, so that no record pays for them:
    # which ordered value latest/first takes (``_TAKES_ONE``); None: every one counts
    takes: slice | None = field(init=False, repr=False, compare=False)
    reducer: Reducer | None = field(init=False, repr=False, compare=False)  # None: count
    unit: str | None = field(init=False, repr=False, compare=False)  # a value's unit
    kind: str = field(init=False, repr=False, compare=False)  # ``resource``, as text
    tally: str = field(init=False, repr=False, compare=False)  # "(latest of " (provenance)

    def __post_init__(self) -> None:
        derived = {
            "takes": _TAKES_ONE.get(self.reduce),
            "reducer": _REDUCE.get(self.reduce),
            "unit": None if self.categorical else self.model_unit,
            "kind": self.resource.value,
            "tally": f"({self.reduce.value} of ",
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    # --- gathering ------------------------------------------------------------------------
    def _facts(self, record: PatientRecord, index: FactIndex, as_of: datetime) -> list[Fact]:
        if self.patient is not None:
            return self._patient_fact(record, as_of)
        if self.codes:
            facts = index.find(self.codes, self.panels)
            if self.fhirpath is None:
                return facts
            firsts = {id(f.resource): f for f in reversed(facts)}
            return [
                g
                for f in firsts.values()
                for g in self._evaluate(self.fhirpath, f.resource, (f.time, f.end), f.code)
            ]
        if self.fhirpath is None:
            return []
        if self.resource is ResourceKind.Patient:
            patient = record.patient
            return (
                self._evaluate(self.fhirpath, patient, (as_of, None), "fhirpath") if patient else []
            )
        if self.resource is ResourceKind.Encounter:
            return [
                g
                for e in record.encounters
                for g in self._evaluate(self.fhirpath, e, (_encounter_time(e), None), "fhirpath")
            ]
        return [
            g
            for o in index.observations
            for g in self._evaluate(self.fhirpath, o, dated(o), "fhirpath")
        ]

    def _evaluate(
        self,
        fhirpath: Evaluator,
        resource: Mapping[str, Any],
        when: tuple[datetime | None, datetime | None],
        code: str,
    ) -> list[Fact]:
        """The values ``fhirpath`` finds in ``resource``, at ``when`` (its time and, for a
        value dated only to a period, the period's end: ``dated``)."""
        try:
            results = fhirpath(resource)
        except Exception:  # fhirpathpy raises bare Exception; its text may quote the data
            raise UnmappableRecord(
                f"feature {self.name!r}: FHIRPath failed on a {resource.get('resourceType')}",
                self.name,
            ) from None
        time, end = when
        facts = []
        for item in results:
            value: tuple[float | None, str | None, tuple[str, ...], str | None] | None
            if isinstance(item, bool):
                value = None, None, ("true" if item else "false",), None
            elif isinstance(item, int | float | Decimal):
                value = float(item), None, (), None
            elif isinstance(item, str):
                value = None, None, (item,), None
            elif isinstance(item, dict):
                value = value_of({"valueQuantity": item}) or value_of(
                    {"valueCodeableConcept": item}
                )
            else:
                value = None
            if value is not None:
                facts.append(Fact(time, *value[:3], code, resource, -1, value[3], end))
        return facts

    def _patient_fact(self, record: PatientRecord, as_of: datetime) -> list[Fact]:
        patient = record.patient
        if patient is None:
            return []
        if self.patient is PatientField.gender:
            gender = patient.get("gender")
            return (
                [Fact(as_of, None, None, (gender,), "Patient.gender", patient)]
                if isinstance(gender, str)
                else []
            )
        born = parse_time(patient.get("birthDate"))
        if born is None:
            return []
        years = completed_years(born.date(), as_of.date())
        if years != completed_years(last_day(patient["birthDate"], born.date()), as_of.date()):
            raise UnmappableRecord(
                f"feature {self.name!r}: Patient.birthDate gives only a year or a month, "
                "which leaves the age at the as-of time ambiguous",
                self.name,
            )
        return [Fact(as_of, float(years), "a", (), "Patient.birthDate", patient)]

    # --- a site's data, surveyed before go-live ---------------------------------------------
    def survey(self, record: PatientRecord, index: FactIndex, as_of: datetime) -> FeatureSurvey:
        """What this feature finds in ``record`` and what becomes of it, for
        ``edge-agent mapping check --sample``: read, imputed or refused (and why), converted,
        out of range, and how many hours the newest value is older than the window."""
        found = self._facts(record, index, as_of)
        in_window = within(found, as_of, self.window)
        beyond = None
        if found and not in_window and self.window is not None:
            times = [f.time for f in found if f.time is not None and f.time <= as_of]
            if times:
                beyond = (as_of - self.window - max(times)).total_seconds() / 3600
        try:
            value, _ = self.extract(record, index, as_of)
        except UnmappableRecord as exc:
            return FeatureSurvey(self.name, bool(in_window), exc.reason, False, False, beyond)
        outcome = "imputed" if value.imputed else "read"
        return FeatureSurvey(
            self.name,
            bool(in_window),
            outcome,
            value.conversion is not None,
            value.out_of_range,
            beyond,
        )

    # --- one value --------------------------------------------------------------------------
    def extract(
        self, record: PatientRecord, index: FactIndex, as_of: datetime
    ) -> tuple[FeatureValue, str | None]:
        """This feature's value for ``record`` and a warning (None if there is nothing to
        say). UnmappableRecord when the mapping says refuse."""
        found = self._facts(record, index, as_of)
        window = self.window
        if found:
            self._placed(found, as_of)
        facts = within(found, as_of, window)
        if not facts and found and self.fallback is None:
            raise MissingValue(
                f"feature {self.name!r}: no value within the {hours(window)} window "
                "before the as-of time; values exist outside it",
                self.name,
            )
        if len(facts) > 1:  # in time order; untimed values (only without a window) first
            if window is None:
                earliest = datetime.min.replace(tzinfo=as_of.tzinfo)
                facts.sort(key=lambda f: f.time or earliest)
            else:
                facts.sort(key=_TIME)
        reducer = self.reducer
        if reducer is None:  # count: the number of values, never missing
            value = self._value(float(len(facts)), float(len(facts)), facts, None)
        elif self.categorical:
            value = self._categorical(facts)
        else:
            value = self._numeric(facts, reducer)
        return value, self._warning(value) if value.imputed or value.out_of_range else None

    def _placed(self, found: list[Fact], as_of: datetime) -> None:
        """Refuses the patient when a value dated only to its day (month, year) cannot be
        placed (``agent.mapping.timing.unplaced``) rather than score it from a guess."""
        problem = unplaced(found, as_of, self.window, ordered=self.takes is not None)
        if problem is not None:
            fact, precision, where = problem
            raise UnmappableRecord(
                f"feature {self.name!r}: {_origin(fact)} is dated only to the {precision}, "
                f"which cannot place it {where}",
                self.name,
            )

    def read(self, number: float) -> tuple[FeatureValue, str | None]:
        """An already-extracted value in the model's unit or level index (an OIP tensor, a
        feature CSV cell) under the same rules as a record's: NaN is missing and gets this
        feature's ``missing``; a level index the model does not have gets its ``unseen``;
        a number outside the plausible range its ``out_of_range``. Returns the value and
        its warning, as ``extract``; UnmappableRecord when the mapping says refuse."""
        if number != number:  # NaN
            value = self._missing(unseen=False)
        elif self.categorical and not (number.is_integer() and 0 <= number < len(self.levels)):
            if self.unseen is UnseenPolicy.refuse:
                raise UnseenCategory(
                    f"feature {self.name!r}: the value is not a level index of the model "
                    f"(0 to {len(self.levels) - 1})",
                    self.name,
                )
            value = self._missing(unseen=True)
        else:
            display = self.levels[int(number)] if self.categorical else number
            value = self._value(number, display, [], None, source="feature vector")
        return value, self._warning(value)

    def _warning(self, value: FeatureValue) -> str | None:
        if value.imputed:
            why = "category not among the mapped levels" if value.unseen_category else "missing"
            return f"{self.name}: {why}, {value.source}"
        return f"{self.name}: value outside the model's range" if value.out_of_range else None

    def _numeric(self, facts: list[Fact], reducer: Reducer) -> FeatureValue:
        """The number ``reducer`` makes of ``facts`` (in time order), each in the model's
        unit. A value the reduction takes that is no number (text, a code, a comparator, a
        range) refuses the patient: read as missing, ``latest`` would silently fall back to
        an older value."""
        takes = self.takes
        taken = facts if takes is None else facts[takes]
        for fact in taken:
            if fact.number is None:
                raise UnmappableRecord(
                    f"feature {self.name!r}: {_origin(fact)} carries "
                    f"{fact.shape or 'a text or coded value'}, not a number",
                    self.name,
                )
        if len(taken) == 1 and len(facts) > 1:
            self._no_rival(taken[0], facts)
        used, values, labels = [], [], set()
        site, site_unit, aliases = self.site_conversion, self.site_unit, self.unit_aliases
        model_unit = self.model_unit
        for fact in facts:
            number = fact.number
            if number is None:
                continue
            # a value without a unit, or in the site's unit: the conversion worked out at
            # load; in another unit (an alias resolved first): converted from that one
            unit = fact.unit
            step = site
            if unit and model_unit is not None:
                unit = aliases.get(unit, unit)
                if unit != site_unit:
                    step = self._conversion(fact, unit, model_unit)
            used.append(fact)
            values.append(step.scale * number + step.offset)
            if step.label:
                labels.add(step.label)
        if not used:
            return self._missing(unseen=False)
        reduced = reducer(values)
        label = "; ".join(sorted(labels)) if labels else None
        return self._value(reduced, round(reduced, 6), used, label)

    def _no_rival(self, chosen: Fact, facts: list[Fact]) -> None:
        """``latest`` or ``first`` must take one value: another of the same time with a
        different value (two results sent for one moment, neither a correction) leaves the
        choice to the order of the input, so the patient is refused."""
        if chosen.time is None or chosen.resource.get("status") in _SUPERSEDING:
            return
        for fact in facts:
            if fact.time == chosen.time and (fact.number, fact.unit) != (
                chosen.number,
                chosen.unit,
            ):
                raise UnmappableRecord(
                    f"feature {self.name!r}: {_origin(chosen)} has two different values at "
                    f"the time {self.reduce.value} takes, neither a correction",
                    self.name,
                )

    def _conversion(self, fact: Fact, unit: str, model_unit: str) -> Conversion:
        """The conversion of ``fact``'s value from ``unit`` (what it carries, its alias
        resolved), other than the site's, to ``model_unit``."""
        try:
            return conversion(unit, model_unit, self.molar_mass)
        except UnitError:
            raise UnconvertibleUnit(
                f"feature {self.name!r}: {_origin(fact)} carries {_named(fact.unit)}, "
                f"which cannot be converted to {self.model_unit}; if it is the site's "
                "spelling of a UCUM unit, add it to unit_aliases",
                self.name,
            ) from None

    def _categorical(self, facts: list[Fact]) -> FeatureValue:
        """The level of the value ``latest`` (else the first) takes; one that is no code
        or text (a number, a range) refuses the patient, as in ``_numeric``."""
        if not facts:
            return self._missing(unseen=False)
        chosen = facts[-1] if self.reduce is Reduction.latest else facts[0]
        if not chosen.labels:
            raise UnmappableRecord(
                f"feature {self.name!r}: {_origin(chosen)} carries "
                f"{chosen.shape or 'a number'}, not a category",
                self.name,
            )
        labelled = [f for f in facts if f.labels]
        level = next((self.categories[x] for x in chosen.labels if x in self.categories), None)
        if level is None:
            if self.unseen is UnseenPolicy.refuse:
                raise UnseenCategory(
                    f"feature {self.name!r}: {_origin(chosen)} carries a category "
                    "the mapping does not list",
                    self.name,
                )
            return self._missing(unseen=True)
        return self._value(float(level), self.levels[level], labelled, None)

    def _value(
        self,
        value: float,
        display: str | float,
        facts: list[Fact],
        label: str | None,
        *,
        source: str | None = None,
    ) -> FeatureValue:
        """``value`` under the plausible range rule (the mapping's ``range``, else the
        manifest's; ``out_of_range``: refuse, clip or flag), for records and raw vectors
        alike. ``source``: where the value came from, when not from ``facts``."""
        low, high = self.low, self.high
        out = not self.categorical and (
            (low is not None and value < low) or (high is not None and value > high)
        )
        if out and self.out_of_range is RangePolicy.refuse:
            raise ImplausibleValue(
                f"feature {self.name!r}: value outside the plausible range "
                f"{_bounds(self.low, self.high, self.model_unit)} (a wrong unit or a typo?); "
                "the mapping says refuse",
                self.name,
            )
        if out and self.out_of_range is RangePolicy.clip:
            value = min(
                max(value, self.low if self.low is not None else value),
                self.high if self.high is not None else value,
            )
            display = round(value, 6)
        return FeatureValue(
            self.name,
            value,
            display,
            source or self._source(facts),
            self.unit,
            conversion=label,
            out_of_range=bool(out),
        )

    def _source(self, facts: list[Fact]) -> str:
        """Where the value came from: ``Observation http://loinc.org|8867-4 (latest of 6)``,
        the codes in the order of the values they gave."""
        if self.patient is not None:
            return "Patient.gender" if self.patient is PatientField.gender else "Patient.birthDate"
        if not facts:
            return f"{self.kind} {', '.join(self.codes) or 'fhirpath'} {self.tally}0)"
        first = facts[0]
        codes = first.code if len(facts) == 1 else ", ".join({f.code: None for f in facts})
        if first.slot >= 0 and all(f.slot >= 0 for f in facts):
            kind = "Observation component"
        else:
            kind = str(first.resource.get("resourceType", self.kind))
        return f"{kind} {codes or ', '.join(self.codes) or 'fhirpath'} {self.tally}{len(facts)})"

    def _missing(self, unseen: bool) -> FeatureValue:
        if self.fallback is None:
            raise MissingValue(
                f"feature {self.name!r}: no value in the record and the mapping says refuse",
                self.name,
            )
        return FeatureValue(
            name=self.name,
            value=self.fallback.value,
            display=self.fallback.display,
            source=self.fallback.source,
            unit=self.unit,
            imputed=True,
            unseen_category=unseen,
        )


# Statuses by which a value supersedes another of the same time (HL7 v2 OBX-11 C and A).
_SUPERSEDING = frozenset({"corrected", "amended"})
_TIME = attrgetter("time")  # the sort key of values that all have a time
# the reductions that take one value by time order: which of the ordered values they take
_TAKES_ONE = {Reduction.latest: slice(-1, None), Reduction.first: slice(0, 1)}

_REDUCE: dict[Reduction, Reducer] = {
    Reduction.latest: itemgetter(-1),
    Reduction.first: itemgetter(0),
    Reduction.mean: fmean,
    Reduction.min: min,
    Reduction.max: max,
}


def _kind(fact: Fact) -> str:
    kind = str(fact.resource.get("resourceType", "Observation"))
    return f"{kind} component" if fact.slot >= 0 else kind


def _origin(fact: Fact) -> str:
    """``Observation http://loinc.org|8310-5`` or ``Patient.gender``: where, never what."""
    kind = _kind(fact)
    return fact.code if fact.code.startswith(f"{kind}.") else f"{kind} {fact.code}"


def _named(unit: str | None) -> str:
    """The unit a record carried, for a refusal: named when it is a UCUM unit (``'kg'``),
    else only described, so free text in a unit field (which could be anything, patient
    data included) never reaches an answer."""
    if unit:
        try:
            check_unit(unit)
        except UnitError:
            return "a unit text that is not UCUM"
        return f"unit {unit!r}"
    return "no unit"


def _bounds(low: float | None, high: float | None, unit: str | None) -> str:
    span = f"[{'' if low is None else f'{low:g}'}, {'' if high is None else f'{high:g}'}]"
    return f"{span} {unit}" if unit else span


def _encounter_time(encounter: Any) -> datetime | None:
    period = encounter.get("period") or {}
    return parse_time(period.get("end") or period.get("start"))
