"""The cheap tests ``fhir_datatypes`` runs before the FHIR regular expressions (a common
full dateTime shape, printable codes) accept exactly what the expressions accept."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.records.fhir_datatypes import CODE, DATE, DATETIME, INSTANT, Invalid, is_code, when


def _by_the_expression(value: str, match: Callable[[str], Any]) -> bool:
    """The rule as R4 writes it: the datatype's expression, then a real day and time."""
    if match(value) is None:
        return False
    try:
        if len(value) > 10:
            datetime.fromisoformat(value)
        elif len(value) == 10:
            date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _accepted(value: str, match: Callable[[str], Any]) -> bool:
    try:
        when(value, ".x", match)
    except Invalid:
        return False
    return True


# Each part of the usual shape (valid first), and values in and out of range for it.
_PARTS: list[list[str]] = [
    ["2026", "0000", "0001", "1999", "9999", "202", "20260"],
    ["-"],
    ["03", "01", "02", "12", "13", "00", "1"],
    ["-"],
    ["14", "28", "29", "30", "31", "32", "00"],
    ["T", " ", "t"],
    ["10", "00", "09", "23", "24", "29"],
    [":"],
    ["00", "59", "60"],
    [":"],
    ["00", "59", "60", "5"],
    ["", ".5", ".123456", ".1234567", "."],
    ["Z", "z", "+00:00", "-13:59", "+14:00", "+14:01", "-14:30", "+15:00", "", "+0100", "+01"],
]


def _one_part_off() -> list[str]:
    """The usual shape with one part at a time taking each of its other values."""
    out = []
    for index, choices in enumerate(_PARTS):
        for choice in choices:
            parts = [c[0] for c in _PARTS]
            parts[index] = choice
            out.append("".join(parts))
    return out


def _agree(value: str) -> None:
    for match in (DATETIME, INSTANT, DATE):
        assert _accepted(value, match) == _by_the_expression(value, match), (value, match)


@pytest.mark.parametrize("value", _one_part_off())
def test_a_datetime_or_instant_is_accepted_exactly_as_the_r4_expression_says(value: str) -> None:
    _agree(value)


@settings(max_examples=300, deadline=None)
@given(st.tuples(*(st.sampled_from(choices) for choices in _PARTS)))
def test_so_is_any_combination_of_those_parts(parts: tuple[str, ...]) -> None:
    _agree("".join(parts))


@pytest.mark.parametrize(
    "value", ["2026", "2026-03", "2026-02-30", "2026-03-14", "2026-03-14T10:00Z"]
)
def test_partial_dates_take_the_expression(value: str) -> None:
    _agree(value)


@settings(max_examples=500, deadline=None)
@given(
    st.text(
        st.sampled_from(
            [" ", "a", "7", "-", "\t", "\n", "\u00a0", "\u200b", "\u2028", "\x1c", "\x85"]
        ),
        max_size=6,
    )
)
def test_a_code_is_accepted_exactly_as_the_r4_expression_says(value: str) -> None:
    assert is_code(value) == (CODE(value) is not None)


@pytest.mark.parametrize(
    "value", ["8867-4", "a b", "a  b", " a", "a ", "a\tb", "", "a\u00a0b", "a\u200bb", "a\nb"]
)
def test_codes_at_the_edges(value: str) -> None:
    assert is_code(value) == (CODE(value) is not None)
