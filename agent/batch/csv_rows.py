"""CSV of already-extracted features: no record mapping, but the same cell reading as
``edge-agent bundle predict`` (``agent.cells``) and the site mapping's ``missing`` policy.

The header names the model's features, in any order (extra columns are ignored, as in
``bundle predict``). An optional ``label`` column is not a feature: it is echoed in the
outputs so the caller can join results back. The reader only cuts rows; each row is read
into the model's input order by ``vector_row`` against the model view that scores it: empty,
``NA``, ``NaN``, ``null`` are missing (NaN); a categorical cell is a level name (or, for
word levels, the level's index); anything else a finite number. A cell that cannot be read
fails its row alone, naming the column. The data plane then applies the site mapping's
rules to each row as to a record (``missing``, plausible range, ``max_imputed``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any, BinaryIO

from agent.batch.items import BadItem, BatchItem, UnreadableFile, VectorItem
from agent.cells import UnreadableCell, encode
from agent.dataplane import ModelView

LABEL_COLUMN = "label"


def csv_items(stream: BinaryIO) -> Iterator[BatchItem]:
    """Stream feature rows; the header is checked before the first row is yielded."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    try:
        yield from _rows(csv.reader(text))
    finally:
        text.detach()  # the caller owns ``stream`` and closes it


def _rows(reader: Any) -> Iterator[BatchItem]:
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise UnreadableFile("no_header", "the CSV file is empty") from None
    except csv.Error as exc:
        raise UnreadableFile("bad_csv", "the CSV header cannot be read") from exc
    features = [i for i, name in enumerate(header) if name != LABEL_COLUMN]
    label_at = header.index(LABEL_COLUMN) if LABEL_COLUMN in header else None
    if not features or any(not header[i] for i in features):
        raise UnreadableFile("bad_header", "the CSV header must name every feature column")
    if len(set(header)) != len(header):
        raise UnreadableFile("bad_header", "the CSV header names a column twice")
    columns = tuple(header[i] for i in features)
    previous = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if reader.line_num == previous:  # the reader cannot move past it
                raise UnreadableFile("bad_csv", "the CSV file cannot be read further") from exc
            lines = (previous + 1, reader.line_num)
            previous = reader.line_num
            yield BadItem(lines, "bad_csv", "the row is not valid CSV")
            continue
        lines = (previous + 1, reader.line_num)
        previous = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        label = row[label_at] if label_at is not None and label_at < len(row) else ""
        if len(row) != len(header):
            detail = f"the row has {len(row)} cells, the header {len(header)}"
            yield BadItem(lines, "wrong_width", detail, label)
            continue
        yield VectorItem(lines, columns, tuple(row[i] for i in features), label)


class UnreadableRow(ValueError):
    """A feature row the model cannot read; ``reason`` a slug, the message PHI-free (it
    names columns, never a value); ``feature`` the feature whose cell it is, if one."""

    def __init__(self, reason: str, message: str, feature: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.feature = feature


def vector_row(item: VectorItem, model: ModelView) -> tuple[float, ...]:
    """``item``'s cells in ``model``'s input order (``agent.cells``), NaN for a missing
    cell (the data plane gives it what the site mapping says, within the imputation
    budget, as for a record); ``UnreadableRow`` naming the column otherwise."""
    inputs = model.manifest.inputs
    at = {name: i for i, name in enumerate(item.columns)}
    absent = [f.name for f in inputs if f.name not in at]
    if absent:
        raise UnreadableRow("missing_column", f"the CSV has no column for {', '.join(absent)}")
    row = []
    for feature in inputs:
        try:
            row.append(encode(feature, item.cells[at[feature.name]]))
        except UnreadableCell as exc:
            detail = f"feature {feature.name}: {exc}"
            raise UnreadableRow(exc.reason, detail, feature.name) from None
    return tuple(row)
