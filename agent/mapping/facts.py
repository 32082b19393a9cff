"""What a record says, indexed for mapping: every Observation (and every component of one)
under each (system, code) of its codings, with its time and value taken apart once.

Built once per record and shared by all features, so extracting thirty features costs one
pass over the observations plus dictionary look-ups.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any, NamedTuple

UCUM = "http://unitsofmeasure.org"
# Observations in these states say nothing about the patient (``registered``: no result
# yet, whatever value it carries; HL7 v2 OBX-11 I and O).
VOID_STATUS = frozenset({"entered-in-error", "cancelled", "registered"})


class Fact(NamedTuple):
    """One observed value: numeric (``number`` with ``unit`` as the record wrote it) or
    categorical (``labels``: the codes or text it carries). A NamedTuple: a record makes
    dozens per scoring, and a frozen dataclass costs several times more to build."""

    time: datetime | None
    number: float | None
    unit: str | None  # a UCUM code, or a unit text when the record gave no UCUM code
    labels: tuple[str, ...]
    code: str  # "system|code" the fact was found under, for provenance
    resource: Mapping[str, Any]  # the Observation (a component's: its panel); or the Patient
    slot: int = -1  # -1: the Observation's own value; n: its n-th component
    shape: str | None = None  # a value that is no plain number though it is numeric (a
    # comparator, a range, a ratio): what it is, for a numeric feature's refusal
    end: datetime | None = None  # an Observation's value dated only to a day, a month or
    # a year (``time`` is that period's start): the period's end (``dated``)


def parse_time(text: Any) -> datetime | None:
    """FHIR date / dateTime / instant -> aware datetime; partial dates start their period;
    a time without an offset is read as UTC. None if absent or not a date."""
    if not isinstance(text, str) or (length := len(text)) < 4:
        return None
    try:
        if length == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if length == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        value = _FROM_ISO(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_FROM_ISO = datetime.fromisoformat


def observation_time(observation: Mapping[str, Any]) -> datetime | None:
    """effective[x] (a period counts at its end, else its start), else ``issued``."""
    return parse_time(observation_time_text(observation))


PRECISION = {4: "year", 7: "month", 10: "day"}  # a FHIR date's length -> its period


def dated(resource: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """An Observation's time (``observation_time``) and, when that names only a day, a
    month or a year (the time is the period's first moment), the period's end; else None
    (a moment, or a resource that is no Observation). Worked out once per value, where
    the value is read, for ``agent.mapping.timing.unplaced``."""
    text = observation_time_text(resource)
    time = parse_time(text)
    if (
        time is None
        or len(text) not in PRECISION
        or time.hour
        or time.minute
        or time.second
        or time.microsecond
        or resource.get("resourceType") != "Observation"
    ):
        return time, None
    last = last_day(text, time.date())
    return time, datetime.combine(last + timedelta(days=1), datetime.min.time(), time.tzinfo)


def last_day(text: str, first: date) -> date:
    """The last day a FHIR date of ``first``'s period can be: a year's, a month's or the
    day itself (``parse_time`` reads a partial date as its first day)."""
    if len(text) == 4:
        return first.replace(month=12, day=31)
    if len(text) == 7:
        return first.replace(day=calendar.monthrange(first.year, first.month)[1])
    return first


def observation_time_text(observation: Mapping[str, Any]) -> Any:
    """The text ``observation_time`` reads, as the record wrote it (its length tells a
    date's precision: ``2026``, ``2026-03``, ``2026-03-15`` or a moment)."""
    if "effectiveDateTime" in observation:
        return observation["effectiveDateTime"]
    if "effectiveInstant" in observation:
        return observation["effectiveInstant"]
    period = observation.get("effectivePeriod")
    if isinstance(period, dict):
        return period.get("end") or period.get("start")
    return observation.get("issued")


_NUMBERS = (int, float, Decimal)
_UCUM = (None, UCUM)  # a Quantity's system that makes its ``code`` a UCUM unit

# Values that are not one number: a numeric feature cannot read them as one.
_SHAPES = {
    "valueRange": "a range",
    "valueRatio": "a ratio",
    "valueSampledData": "sampled data",
    "valueDateTime": "a date or time",
    "valueTime": "a date or time",
    "valuePeriod": "a period",
}


def value_of(
    element: Mapping[str, Any],
) -> tuple[float | None, str | None, tuple[str, ...], str | None] | None:
    """(number, unit, labels, shape) of an Observation or component value; None when it has
    none. ``shape`` names a numeric value that is not one measured number (``>10`` is not
    10; a range or a ratio is not a number): ``number`` is then None."""
    get = element.get
    quantity = get("valueQuantity")
    if isinstance(quantity, dict):
        number = quantity.get("value")
        if isinstance(number, _NUMBERS) and not isinstance(number, bool):
            code = quantity.get("code")
            unit = code if code and quantity.get("system", UCUM) in _UCUM else quantity.get("unit")
            if quantity.get("comparator") is not None:
                return None, unit, (), "a value with a comparator (<, >)"
            return float(number), unit, (), None
    integer = get("valueInteger")
    if isinstance(integer, int) and not isinstance(integer, bool):
        return float(integer), None, (str(integer),), None
    concept = element.get("valueCodeableConcept")
    if isinstance(concept, dict):
        labels = tuple(c["code"] for c in concept.get("coding", []) if c.get("code"))
        return None, None, labels + ((concept["text"],) if concept.get("text") else ()), None
    if isinstance(element.get("valueString"), str):
        return None, None, (element["valueString"],), None
    if isinstance(element.get("valueBoolean"), bool):
        return None, None, ("true" if element["valueBoolean"] else "false",), None
    for key, shape in _SHAPES.items():
        if element.get(key) is not None:
            return None, None, (), shape
    absent = element.get("dataAbsentReason")
    if isinstance(absent, dict) and any(
        isinstance(c, dict) and c.get("code") == "unsupported" for c in absent.get("coding", ())
    ):  # a value exists, of a kind its source could not carry (an HL7 ED, TM, ...)
        return None, None, (), "a value of a kind the agent does not read"
    return None


def _codes(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [
        f"{c.get('system', '')}|{c['code']}"
        for c in concept.get("coding", [])
        if isinstance(c, dict) and c.get("code")
    ]


class Unsure(str):
    """The ``system|code`` key of a feature's code that a coding names without its system
    (FHIR ``Coding.system`` absent, HL7 OBX-3 without its coding system): the value may be
    that feature's or another system's code of the same spelling, so it is read as no value
    (``NO_SYSTEM``) that refuses the patient where the feature would take it, rather than
    being passed over for an older value, or taken as the feature's."""

    @property
    def named(self) -> str:
        """``|code``: as the record named it, for the refusal (never a system it lacked)."""
        return "|" + self.partition("|")[2]


NO_SYSTEM = "a code without its coding system"


class WantedCodes:
    """The mapping's codes by system, built once at load: a coding is looked up in two
    dictionaries, which give its ``system|code`` key ready made."""

    def __init__(self, codes: frozenset[str]) -> None:
        by_system: dict[str, dict[str, str]] = {}
        bare: dict[str, list[Unsure]] = {}
        for text in codes:
            system, _, code = text.partition("|")
            by_system.setdefault(system, {})[code] = text
            bare.setdefault(code, []).append(Unsure(text))
        self.by_system = by_system
        self.bare = bare

    def hits(self, concept: Any) -> list[str]:
        """``system|code`` of each coding of ``concept`` that a feature reads, then, as
        ``Unsure``, those of a feature's code it names without a system (unless another of
        its codings names that very key)."""
        if not isinstance(concept, dict):
            return []
        found: list[str] = []
        unsure: list[Unsure] = []
        by_system = self.by_system
        for coding in concept.get("coding", ()):
            if not isinstance(coding, dict):
                continue
            code, system = coding.get("code"), coding.get("system", "")
            if isinstance(code, str) and isinstance(system, str):
                key = by_system.get(system, _NONE).get(code)
                if key is not None:
                    found.append(key)
                elif not system and code in self.bare:
                    unsure += self.bare[code]
        if unsure:
            found += [key for key in unsure if key not in found]
        return found


_NONE: dict[str, str] = {}


class FactIndex:
    """Facts of one record by ``system|code``; components also by their panel's codes.

    Only codes in ``wanted`` (the mapping's codes) are indexed, so Observations no feature
    reads cost a code look-up and nothing more. ``observations`` lists every Observation
    that is not void, for FHIRPath features that read them all (only they pay for it).
    """

    def __init__(self, observations: Any, wanted: WantedCodes) -> None:
        top: dict[str, list[Fact]] = {}
        self.top = top
        self.components: dict[str, list[tuple[frozenset[str], Fact]]] = {}
        self._all = observations
        hits_of = wanted.hits
        make = Fact._make  # from a tuple: less than half what the keyword constructor costs
        for observation in observations:
            if observation.get("status") in VOID_STATUS:
                continue
            concept = observation.get("code")
            hits = hits_of(concept)
            components = observation.get("component")
            if not hits and not components:
                continue
            time, end = dated(observation)
            value = value_of(observation) if hits else None
            if value is not None:
                number, unit, labels, shape = value
                for code in hits:
                    if type(code) is Unsure:
                        fact = make(
                            (time, None, None, (), code.named, observation, -1, NO_SYSTEM, end)
                        )
                    else:
                        fact = make((time, number, unit, labels, code, observation, -1, shape, end))
                    found = top.get(code)
                    if found is None:
                        top[code] = [fact]
                    else:
                        found.append(fact)
            if components:
                self._components(observation, components, concept, time, end, wanted)

    @cached_property
    def observations(self) -> list[Mapping[str, Any]]:
        """Every Observation of the record that is not void, in its order."""
        return [o for o in self._all if o.get("status") not in VOID_STATUS]

    def _components(
        self,
        observation: Mapping[str, Any],
        components: Any,
        concept: Any,
        time: datetime | None,
        end: datetime | None,
        wanted: WantedCodes,
    ) -> None:
        """The components a feature reads, under their codes with their panel's codes
        (``concept``'s) and their Observation's time."""
        panel: frozenset[str] | None = None
        for slot, component in enumerate(components):
            hits = wanted.hits(component.get("code"))
            value = value_of(component) if hits else None
            if value is None:
                continue
            if panel is None:
                panel = frozenset(_codes(concept))
            number, unit, labels, shape = value
            for code in hits:
                if type(code) is Unsure:
                    fact = Fact._make(
                        (time, None, None, (), code.named, observation, slot, NO_SYSTEM, end)
                    )
                else:
                    fact = Fact._make(
                        (time, number, unit, labels, code, observation, slot, shape, end)
                    )
                self.components.setdefault(code, []).append((panel, fact))

    def find(self, codes: tuple[str, ...], panels: frozenset[str]) -> list[Fact]:
        """Facts coded with any of ``codes``: top-level Observations, and components inside
        an Observation coded with any of ``panels``. Each value counts once. The caller
        must not change the list (it may be the index's own)."""
        top = self.top
        if len(codes) == 1 and not panels:
            return top.get(codes[0]) or []  # one code: nothing to de-duplicate
        found: list[Fact] = []
        seen: set[tuple[int, int]] = set()
        for code in codes:
            candidates = top.get(code, ())
            if panels:
                candidates = [
                    *candidates,
                    *(f for panel, f in self.components.get(code, ()) if panel & panels),
                ]
            for fact in candidates:
                key = (id(fact.resource), fact.slot)
                if key not in seen:
                    seen.add(key)
                    found.append(fact)
        return found
