"""The labelled history a site validates on: a CSV of (patient, time, outcome).

Header: ``patient`` (the Patient's id, ``Patient/<id>``, or an identifier value such as
the medical record number HL7 PID-3 carries), ``as_of`` (ISO 8601; the time the model
would have scored; a time without an offset is UTC), ``label`` (1 the outcome happened,
0 it did not; without this column the site mapping's ``outcome:`` section derives it from
the records); any further column is a group (a ward, a site, a period) the report breaks
the figures down by. Errors name the line and the column, never a value: the file holds
identifiers.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent.errors import OutcomesError
from agent.instant import parse_instant

REQUIRED = ("patient", "as_of")
LABEL = "label"
KNOWN = (*REQUIRED, LABEL)
MISSING_GROUP = "(not recorded)"  # the group of a row whose group cell is empty


@dataclass(frozen=True)
class Outcome:
    """One labelled moment: score ``patient`` as of ``as_of``; ``label`` is what happened."""

    line: int
    patient: str
    as_of: datetime
    label: int | None  # None: to be derived from the records
    groups: Mapping[str, str]  # group column -> this row's value


@dataclass(frozen=True)
class OutcomeTable:
    """The rows of an outcomes file, by patient key as written, and its group columns."""

    by_patient: Mapping[str, list[Outcome]]
    group_columns: tuple[str, ...]
    labelled: bool  # whether the file has a label column

    @property
    def rows(self) -> int:
        return sum(len(rows) for rows in self.by_patient.values())


def read_outcomes(path: Path) -> OutcomeTable:
    """Every row of the outcomes CSV at ``path``; OutcomesError on the first bad one."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise OutcomesError("the outcomes file cannot be read") from exc
    with handle:
        return read_outcome_lines(handle)


def outcomes_header(line: str) -> bool:
    """Whether ``line`` (a file's first) is the header of an outcomes CSV: it names the
    ``patient`` and ``as_of`` columns."""
    try:
        header = {cell.strip() for cell in next(csv.reader([line.removeprefix("\ufeff")]), [])}
    except csv.Error:
        return False
    return all(name in header for name in REQUIRED)


def read_outcome_lines(lines: Iterable[str]) -> OutcomeTable:
    """Every row of an outcomes CSV given as its lines (as a text file opened with
    ``newline=""`` yields them); OutcomesError on the first bad one."""
    reader = csv.reader(lines)
    try:
        header = [cell.strip() for cell in next(reader, [])]
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise OutcomesError(f"outcomes header lacks column(s): {', '.join(missing)}")
        if len(set(header)) != len(header):
            raise OutcomesError("outcomes header names a column twice")
        groups = tuple(name for name in header if name not in KNOWN)
        by_patient: dict[str, list[Outcome]] = {}
        seen: dict[tuple[str, datetime], int] = {}
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            row = _row(reader.line_num, header, cells, groups)
            first = seen.setdefault((row.patient, row.as_of), row.line)
            if first != row.line:
                raise OutcomesError(
                    f"outcomes line {row.line}: the same patient and time as line {first}"
                )
            by_patient.setdefault(row.patient, []).append(row)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise OutcomesError(f"outcomes line {reader.line_num}: not UTF-8 CSV") from exc
    if not by_patient:
        raise OutcomesError("the outcomes file has no rows")
    return OutcomeTable(by_patient, groups, LABEL in header)


def _row(line: int, header: list[str], cells: list[str], groups: tuple[str, ...]) -> Outcome:
    if len(cells) != len(header):
        raise OutcomesError(f"outcomes line {line}: {len(cells)} cells for {len(header)} columns")
    values = {name: cell.strip() for name, cell in zip(header, cells, strict=True)}
    if not values["patient"]:
        raise OutcomesError(f"outcomes line {line}: column patient is empty")
    as_of = parse_instant(values["as_of"])
    if as_of is None:
        raise OutcomesError(f"outcomes line {line}: column as_of is not an ISO 8601 time")
    label = values.get(LABEL)
    if label is not None and label not in ("0", "1"):
        raise OutcomesError(f"outcomes line {line}: column label is not 0 or 1")
    return Outcome(
        line=line,
        patient=values["patient"],
        as_of=as_of,
        label=None if label is None else int(label),
        groups={name: values[name] or MISSING_GROUP for name in groups},
    )
