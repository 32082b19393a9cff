"""The subgroups every report breaks figures down by, drawn from the Patient resource as
of the scored time: sex (``Patient.gender``) and age bands (``Patient.birthDate``).

Their group names come from fixed vocabularies, so a report may name a suppressed one;
groups from an outcomes file's own columns are free text and are not named when
suppressed (a rare value could identify someone)."""

from __future__ import annotations

from datetime import date

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


def age_group(born: date | None, on: date) -> str:
    """The age band of someone born on ``born`` as of ``on``."""
    if born is None or born > on:
        return NOT_RECORDED
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    band = AGE_BANDS[0][1]
    for lowest, name in AGE_BANDS:
        if years >= lowest:
            band = name
    return band
