"""The one reading of feature-table cells (``agent.cells``) that ``bundle predict``,
``agent.load``, feature CSVs and the reference CSV share."""

from __future__ import annotations

import math

import pytest

from agent.bundle.manifest import FeatureKind, InputFeature
from agent.cells import UnreadableCell, encode

NUMBER = InputFeature(name="hr")
WORDS = InputFeature(name="sex", kind=FeatureKind.categorical, levels=["female", "male"])
CODES = InputFeature(name="grade", kind=FeatureKind.categorical, levels=["1", "2", "3"])


@pytest.mark.parametrize("cell", ["", "  ", "NA", " na ", "NaN", "null", "None", None, math.nan])
def test_missing_markers_are_missing_on_every_feature(cell: object) -> None:
    for feature in (NUMBER, WORDS, CODES):
        assert math.isnan(encode(feature, cell))


@pytest.mark.parametrize(
    ("feature", "cell", "expected"),
    [
        (NUMBER, " 72.5 ", 72.5),
        (NUMBER, 1e2, 100.0),
        (WORDS, "male", 1.0),
        (WORDS, "1", 1.0),  # word levels also take their index (OIP, older feature CSVs)
        (WORDS, 0.0, 0.0),
        (CODES, "1", 0.0),  # levels written as numbers are names, never indices
        (CODES, 3.0, 2.0),  # a DataFrame's float code reads as its name
    ],
)
def test_values_read_as_the_module_reads_them(
    feature: InputFeature, cell: object, expected: float
) -> None:
    assert encode(feature, cell) == expected


@pytest.mark.parametrize(
    ("feature", "cell", "reason"),
    [
        (NUMBER, "inf", "bad_value"),
        (NUMBER, "seventy", "bad_value"),
        (NUMBER, True, "bad_value"),
        (WORDS, "other", "unseen_category"),
        (WORDS, "2", "unseen_category"),
        (WORDS, 0.5, "unseen_category"),
        (CODES, "0", "unseen_category"),
    ],
)
def test_unreadable_cells_say_why_without_the_value(
    feature: InputFeature, cell: object, reason: str
) -> None:
    with pytest.raises(UnreadableCell) as caught:
        encode(feature, cell)
    assert caught.value.reason == reason and str(cell) not in str(caught.value)
