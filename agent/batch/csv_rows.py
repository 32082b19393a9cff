"""CSV of already-extracted features, scored like the Open Inference Protocol: no mapping.

The header names the model's features in the model's input order (the pipeline checks the
width; the names are the operator's promise, as with OIP). An optional ``label`` column is
not a feature: it is echoed in the outputs so the caller can join results back. Every other
cell must be a finite number; a row with an empty or non-numeric cell fails alone.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from typing import Any, BinaryIO

from agent.batch.items import BadItem, BatchItem, UnreadableFile, VectorItem

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
        yield _vector(lines, [(header[i], row[i]) for i in features], label)


def _vector(lines: tuple[int, int], cells: list[tuple[str, str]], label: str) -> BatchItem:
    values = []
    for name, cell in cells:
        if not cell.strip():
            return BadItem(lines, "missing_value", f"no value for feature {name}", label)
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return BadItem(lines, "bad_value", f"feature {name} is not a finite number", label)
        values.append(value)
    return VectorItem(lines, tuple(values), label)
