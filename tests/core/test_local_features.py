"""``edge-agent bundle predict``'s CSV reading (``agent.local.read_features``): column by
column and in chunks, it reads every file as the row-by-row ``csv.DictReader`` +
``encode_row`` reading did (blank lines, short and long rows, a repeated column, missing
markers, levels), names the first unreadable cell in file order with its line, and scores
through the float32 matrix path with the numbers of the row path. Run on the signed demo
bundle (9 features, one of them categorical)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

import agent
from agent.cells import encode_row
from agent.errors import RecordError
from agent.local import _CHUNK_ROWS, read_features, result_columns, write_columns

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "demo" / "build" / "deterioration"
HEADER = "heart_rate,respiratory_rate,body_temperature,systolic_bp,spo2,wbc,creatinine,age,sex"
ROWS = [
    "86,17,36.3,95,96,NA,139,62,male",
    " 91 ,22,38.1,101,,7.6,104,74,female",  # blanks around a number, an empty cell
    "78,22,38,101,88,7.6,104,74,1",  # a word level by its index
    "1_10,19,37.6,137,null,12.1,158,68,None",  # digit groups, missing markers
    "78,22,38,101,88,7.6,104",  # short: sex is missing
    "78,22,38,101,88,7.6,104,74,male,extra,cells",  # long: the extra cells are ignored
    "",  # blank: skipped
    "-1e2,22,38,101,88,NaN,104,74,male",
]


def _reference_rows(path: Path) -> list[list[float]]:
    """The reading ``read_features`` replaced: DictReader, then ``encode_row`` per row."""
    manifest = agent.load(DEMO).manifest
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [
            encode_row(
                manifest.inputs,
                [record.get(f.name) for f in manifest.inputs],
                f"features CSV line {line}",
            )
            for line, record in enumerate(csv.DictReader(handle), start=2)
        ]


def _same(a: list[list[float]], b: list[list[float]]) -> bool:
    flat_a = [v for row in a for v in row]
    flat_b = [v for row in b for v in row]
    return [len(row) for row in a] == [len(row) for row in b] and all(
        u == v or (math.isnan(u) and math.isnan(v)) for u, v in zip(flat_a, flat_b, strict=True)
    )


def _write(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "features.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("repeat", [1, _CHUNK_ROWS // 3 + 1])  # one chunk, then several
def test_cells_read_as_dictreader_and_encode_row_read_them(tmp_path: Path, repeat: int) -> None:
    path = _write(tmp_path, ROWS * repeat)
    model = agent.load(DEMO)
    table = read_features(path, model.manifest)
    reference = _reference_rows(path)
    assert table.n_rows == len(reference) == 7 * repeat
    assert _same(table.rows(), reference)
    predictions = model.score(reference)
    expected = write_columns(
        result_columns(model.manifest, [list(c) for c in zip(*predictions, strict=True)]), None
    )
    assert model.score_file(path) == expected


def test_a_repeated_column_reads_its_last_cell_as_dictreader_does(tmp_path: Path) -> None:
    path = _write(tmp_path, ["1,86,17,36.3,95,96,7,139,62,male"], header="age," + HEADER)
    assert _same(read_features(path, agent.load(DEMO).manifest).rows(), _reference_rows(path))


@pytest.mark.parametrize("at_row", [0, _CHUNK_ROWS + 5])
def test_the_first_unreadable_cell_in_file_order_is_named_with_its_line(
    tmp_path: Path, at_row: int
) -> None:
    """A bad ``sex`` cell, then a bad ``wbc`` cell two rows later: the column-wise reading
    meets the ``wbc`` column's first, the error names the ``sex`` cell, first in the file,
    as the row-by-row reading did."""
    lines = [ROWS[0]] * (at_row + 3)
    lines[at_row] = "86,17,36.3,95,96,7.5,139,62,other"
    lines[at_row + 2] = "86,17,36.3,95,96,seven,139,62,male"
    with pytest.raises(RecordError) as caught:
        agent.load(DEMO).score_file(_write(tmp_path, lines))
    assert str(caught.value) == f"features CSV line {at_row + 2}: 'sex' is not one of its levels"


def test_a_header_only_file_gives_a_header_only_result(tmp_path: Path) -> None:
    assert agent.load(DEMO).score_file(_write(tmp_path, [])) == (
        "label,probability_0,probability_1\n"
    )


def test_a_missing_column_is_refused_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path, ["86"], header="heart_rate")
    with pytest.raises(RecordError, match="lacks columns: respiratory_rate"):
        agent.load(DEMO).score_file(path)
