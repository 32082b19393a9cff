"""The one reading of feature-table cells (``agent.cells``) that ``bundle predict``,
``agent.load``, feature CSVs and the reference CSV share."""

from __future__ import annotations

import math

import pytest

from agent.bundle.manifest import FeatureKind, InputFeature
from agent.cells import UnreadableCell, encode, encode_text_column

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


COLUMNS = [
    ["72.5", " 1e2 ", "-3", "1_000", "0x10"],  # 0x10: unreadable, as cell by cell
    ["72.5", "", "NA", " nan ", None],  # missing markers: the column goes cell by cell
    ["1", "-nan", "2"],  # -nan reads as a float but is not a missing marker
    ["1", "+inf", "2"],
    ["1", "1e400", "2"],  # finite text, beyond float: infinity, refused
    ["1e308", "1e308"],  # finite cells whose sum overflows
]


@pytest.mark.parametrize("feature", [NUMBER, WORDS, CODES])
@pytest.mark.parametrize("cells", [*COLUMNS, ["male", "female", "male", "1"], ["2", "3", ""]])
def test_a_text_column_reads_as_its_cells_one_by_one(
    feature: InputFeature, cells: list[str | None]
) -> None:
    """``encode_text_column`` is ``encode`` per cell, fast path or not: the same numbers
    (NaN where NaN) or the same refusal of the first unreadable cell."""
    expected: list[float] | str
    try:
        expected = [encode(feature, cell) for cell in cells]
    except UnreadableCell as exc:
        expected = exc.reason
    try:
        got: list[float] | str = encode_text_column(feature, cells)
    except UnreadableCell as exc:
        got = exc.reason
    assert str(got) == str(expected)
