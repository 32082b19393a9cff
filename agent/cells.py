"""How a cell of a feature table becomes the number a model reads: the one reading shared
by every path that takes feature tables (``edge-agent bundle predict`` and
``agent.load().predict``, ``edge-agent score`` and the drop folder on a feature CSV, the
compiler's reference CSV), so the same file scores the same everywhere.

A leaf module: it imports only the manifest's feature type and the errors.

* Missing: an empty cell and ``NA``, ``NaN``, ``null`` (any case, blanks around), ``None``,
  a float NaN, pandas' ``NA``. What a missing value then becomes is the caller's policy
  (NaN for the module in ``bundle predict``; the site mapping's ``missing`` in the agent).
* A categorical feature: one of its level names (a DataFrame's 1.0 reads as "1"), or, when
  no level is written as a number, the level's index (``0``, ``1.0``: how the Open Inference
  Protocol and older feature CSVs give categories).
* Anything else: a finite number.

Errors (``UnreadableCell``) say what is wrong, never the value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from agent.bundle.manifest import InputFeature
from agent.errors import RecordError

MISSING_CELLS = frozenset({"", "na", "nan", "null", "none"})  # after strip() and lower()


class UnreadableCell(ValueError):
    """A cell that is neither missing nor a value of its feature; ``reason`` is a slug
    (``bad_value``, ``unseen_category``), the message PHI-free."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def is_missing(value: object) -> bool:
    if value is None or type(value).__name__ == "NAType":  # pandas.NA, without pandas
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING_CELLS
    try:
        return math.isnan(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def encode(feature: InputFeature, value: object) -> float:
    """``value`` as the module reads ``feature``: NaN when missing, the level's index for
    a categorical feature, else the number; ``UnreadableCell`` when it is none of these."""
    if is_missing(value):
        return math.nan
    if feature.levels:
        return _level_index(feature.levels, value)
    number = _number(value)
    if number is None or not math.isfinite(number):
        raise UnreadableCell("bad_value", "not a finite number")
    return number


def encode_row(
    features: Sequence[InputFeature], values: Sequence[object], where: str
) -> list[float]:
    """One row of cells, in feature order, encoded; ``RecordError`` naming ``where`` and
    the feature (never the value) for a cell that cannot be read."""
    row = []
    for feature, value in zip(features, values, strict=True):
        try:
            row.append(encode(feature, value))
        except UnreadableCell as exc:
            raise RecordError(f"{where}: {feature.name!r} is {exc}") from None
    return row


def encode_text_column(feature: InputFeature, cells: Sequence[str | None]) -> list[float]:
    """``encode`` of each cell of one column of text (a CSV column; None for a cell a short
    row lacks), with the same answers, faster: when every cell of a numeric feature reads
    as a finite number under ``float`` (which reads what ``encode`` reads as a number:
    blanks around, exponents, digit groups with ``_``), the column is converted in one
    pass; any other column (a missing cell, a level, a bad cell) is encoded cell by cell,
    each distinct cell once. ``UnreadableCell`` for the first cell of the column that
    cannot be read."""
    if not feature.levels:
        try:
            numbers = list(map(float, cells))  # type: ignore[arg-type]  # None: TypeError
        except (TypeError, ValueError):
            pass
        else:
            if math.isfinite(sum(numbers)):  # no NaN or infinity among them
                return numbers
    seen: dict[str | None, float] = {}
    values = []
    for cell in cells:
        value = seen.get(cell)
        if value is None:
            value = seen[cell] = encode(feature, cell)
        values.append(value)
    return values


def label_text(classes: Sequence[str], value: float) -> str | None:
    """The class label of a label output's index; None when it is not a class index."""
    return classes[int(value)] if value == value and 0 <= value < len(classes) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _level_index(levels: Sequence[str], value: object) -> float:
    text = value.strip() if isinstance(value, str) else _number_text(value)
    if text in levels:
        return float(levels.index(text))
    index = _number(value)
    by_index = not any(_number(level) is not None for level in levels)
    if by_index and index is not None and index.is_integer() and 0 <= index < len(levels):
        return index
    raise UnreadableCell("unseen_category", "not one of its levels")


def _number_text(value: object) -> str:
    """A numeric level written as text: 1.0 -> "1" (a DataFrame holds codes as floats)."""
    number = _number(value)
    if number is None:
        return str(value)
    return str(int(number)) if number.is_integer() else str(number)
