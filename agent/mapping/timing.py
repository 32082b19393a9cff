"""When a value counts for a feature: the look-back window ending at the as-of time, and
values dated only to a day, a month or a year, which the window must be able to place.

A FHIR date (``2026-03-15``, ``2026-03``, ``2026``) is read as its period's first moment.
Read that way a value could fall inside a window, or after another value, when it was not,
so a period that straddles the window's start or the as-of time, or that holds another
value ``latest`` or ``first`` must order it against, leaves the value unplaced: the feature
refuses the patient instead of scoring a guess (docs/mapping.md, ``window``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from agent.mapping.facts import PRECISION, Fact, observation_time_text


def within(facts: list[Fact], as_of: datetime, window: timedelta | None) -> list[Fact]:
    """The facts timed within ``window`` before ``as_of``; untimed ones only without one."""
    if window is None:
        return [f for f in facts if f.time is None or f.time <= as_of]
    start = as_of - window
    return [f for f in facts if f.time is not None and start <= f.time <= as_of]


def hours(window: timedelta | None) -> str:
    """A window as a refusal names it (``24 h``)."""
    return f"{(window or timedelta(0)).total_seconds() / 3600:g} h"


def unplaced(
    found: list[Fact], as_of: datetime, window: timedelta | None, *, ordered: bool
) -> tuple[Fact, str, str] | None:
    """The first of ``found`` dated only to a period that the window (or, when ``ordered``,
    the order of values) cannot place, with the period's name and what it cannot be placed
    in; None when every value is placed well enough. A period wholly inside the window, or
    wholly outside it, places its value."""
    start = as_of - window if window is not None else None
    for fact in found:
        end = fact.end
        if end is None or fact.time is None or fact.time >= as_of:
            continue
        if start is not None and end <= start:
            continue
        straddles = end > as_of or (start is not None and fact.time < start)
        rival = ordered and any(
            other is not fact and other.time is not None and fact.time <= other.time < end
            for other in found
        )
        if straddles or rival:
            precision = PRECISION[len(observation_time_text(fact.resource))]
            return fact, precision, "in the look-back window" if straddles else "among the values"
    return None


def completed_years(born: date, on: date) -> int:
    """Age in whole years on ``on``."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
