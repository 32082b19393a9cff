"""The subgroups every report breaks figures down by, drawn from the Patient resource as
of the scored time: sex (``Patient.gender``) and age bands (``Patient.birthDate``).

Their group names come from fixed vocabularies, so a report may name a suppressed one;
groups from an outcomes file's own columns are free text and are not named when
suppressed (a rare value could identify someone)."""

from __future__ import annotations

from datetime import date

from agent.mapping.timing import completed_years

NOT_RECORDED = "not recorded"
SEX = "sex"
AGE = "age"
FIXED_DIMENSIONS = (SEX, AGE)
# (lowest age in completed years, band name), ascending
AGE_BANDS = ((0, "under 18"), (18, "18-44"), (45, "45-64"), (65, "65-79"), (80, "80 and over"))
_SEXES = {"female": "female", "male": "male", "other": "other", "unknown": NOT_RECORDED}


def sex_group(gender: str | None) -> str:
    """The sex subgroup of a FHIR ``Patient.gender`` value."""
    return _SEXES.get(gender or "", NOT_RECORDED)


def age_group(born: tuple[date, date] | None, on: date) -> str:
    """The age band as of ``on`` of someone born within ``born`` (its first and last
    possible day: a birth date of only a year or a month spans one). Not recorded when the
    span straddles a band's edge, so no one is counted in a band they may not be in, as the
    mapping refuses an age it cannot tell."""
    if born is None or born[0] > on:
        return NOT_RECORDED
    first, last = (_band(completed_years(day, on)) for day in (min(born[1], on), born[0]))
    return first if first == last else NOT_RECORDED


def _band(years: int) -> str:
    band = AGE_BANDS[0][1]
    for lowest, name in AGE_BANDS:
        if years >= lowest:
            band = name
    return band
