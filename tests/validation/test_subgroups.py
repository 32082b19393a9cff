"""Age bands from birth dates of every precision FHIR allows: a band is given only when the
whole span a birth date names falls in it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from agent.limits import Limits
from agent.validation.history import patient_histories
from agent.validation.subgroups import NOT_RECORDED, age_group

ON = date(2026, 6, 1)


@pytest.mark.parametrize(
    ("birth_date", "band"),
    [
        ("1961-05-31", "65-79"),  # 65 the day before
        ("1961-06-02", "45-64"),  # 65 the day after
        ("1954", "65-79"),  # 71 or 72: one band either way
        ("1961", NOT_RECORDED),  # 64 or 65: the year straddles the band's edge
        ("1961-06", NOT_RECORDED),  # born before or after the 1st of June
        ("1961-05", "65-79"),
        ("2026", "under 18"),  # born this year, perhaps after ON: 0 either way
        ("2027-01-01", NOT_RECORDED),  # born after ON
        (None, NOT_RECORDED),
    ],
)
def test_a_band_only_when_the_birth_date_places_the_age_in_it(
    tmp_path: Path, birth_date: str | None, band: str
) -> None:
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    if birth_date is not None:
        patient["birthDate"] = birth_date
    source = tmp_path / "patients.ndjson"
    source.write_text(json.dumps(patient) + "\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (history,) = patient_histories([source], Limits(), 1 << 20, scratch)
    assert age_group(history.born, ON) == band
