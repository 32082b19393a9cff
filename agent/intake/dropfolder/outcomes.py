"""Outcome CSVs dropped into the inbox: outcomes that arrived after the predictions, in the
columns ``edge-agent validate --outcomes`` reads (``patient,as_of,label[,model]``; the one
reader, ``agent.validation.outcomes_csv``), recorded through ``DataPlane.record_outcomes``,
the one join path (docs/drop-folder.md, "Outcome files").

A claimed file whose first line names the ``patient`` and ``as_of`` columns is one; any
other file goes on to the batch engine. ``as_of`` is when the outcome was known (as the
HTTP body's ``time``): it labels that patient's predictions made within
``performance.horizon_hours`` before it. An empty or absent ``model`` cell is the drop
folder's model. The report (``<stem>.report.json`` in the outbox) counts the rows
recorded, joined to a prediction or not, and refused by reason (``not_enabled``,
``unknown_model``, ``store``...), per model; a file that cannot be read as outcomes goes
to ``failed/`` with ``<stem>.error.json``, nothing of it recorded. Neither report names a
patient. Recording twice (a crash before the report) joins nothing twice: a prediction is
labelled once.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.batch.engine import utc_now
from agent.batch.inputs import FileIdentity, InputPolicy, open_input
from agent.batch.items import UnreadableFile
from agent.dataplane import DataPlane
from agent.durable import move_durably, write_atomic
from agent.errors import AgentError, OutcomesError
from agent.types import IntakePath, OutcomeReport
from agent.validation.outcomes_csv import (
    MISSING_GROUP,
    OutcomeTable,
    outcomes_header,
    read_outcome_lines,
)

log = logging.getLogger(__name__)

MODEL_COLUMN = "model"
_HEADER_MAX = 4096  # bytes of the first line looked at to tell an outcomes CSV


@dataclass
class _Tally:
    """What became of one model's rows."""

    recorded: int = 0
    joined: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, Any]:
        """As the report gives them: ``unmatched`` were recorded but joined no prediction."""
        return {
            "recorded": self.recorded,
            "joined": self.joined,
            "unmatched": self.recorded - self.joined,
            "refused": dict(self.refused),
        }


@dataclass(frozen=True)
class OutcomeFolders:
    """Where an outcome file's report and original go."""

    outbox: Path
    processed: Path
    failed: Path
    mode: int  # of the reports written


class OutcomeFiles:
    """Recognises, records and files outcome CSVs for the drop folder."""

    def __init__(
        self,
        plane: DataPlane,
        model: str,
        policy: InputPolicy,
        folders: OutcomeFolders,
        size_max: int,
    ) -> None:
        self._plane = plane
        self._model = model
        self._policy = policy
        self._folders = folders
        self._size_max = size_max  # bytes: the file is read whole

    def take(self, path: Path, name: str, stem: str, expected: FileIdentity | None) -> bool:
        """Record the claimed file at ``path`` if it is an outcomes CSV, publish its report
        and move it to ``processed/`` (``failed/`` when unreadable); False, touching
        nothing, when it is not one (or cannot be opened: the batch engine refuses it with
        its reason)."""
        started = utc_now()
        try:
            stream = open_input(path, self._policy, expected)
        except (UnreadableFile, OSError):
            return False
        with stream:
            if not outcomes_header(_first_line(stream.peek(_HEADER_MAX))):
                return False
            try:
                if stream.identity.size > self._size_max:
                    raise UnreadableFile("too_large", f"over {self._size_max} bytes")
                data = stream.read()
                stream.verify_unchanged()
                batches = _batches(read_outcome_lines(_lines(data)), self._model)
            except (UnreadableFile, OutcomesError) as error:
                self._fail(path, name, stem, error, started)
                return True
        tallies = self._record(batches)
        total = _Tally()
        for tally in tallies.values():
            total.recorded += tally.recorded
            total.joined += tally.joined
            total.refused += tally.refused
        report = {
            "file": name,
            "kind": "outcomes",
            "rows": sum(len(reports) for reports in batches.values()),
            **total.counts(),
            "models": {model: tally.counts() for model, tally in tallies.items()},
            "started": started,
            "finished": utc_now(),
        }
        self._write(self._folders.outbox / f"{stem}.report.json", report)
        move_durably(path, self._folders.processed / stem)
        log.info(
            "drop folder outcomes recorded",
            extra={
                "count": total.recorded,
                "status": "ok" if not total.refused else "partial",
            },
        )
        return True

    def _record(self, batches: dict[str, list[OutcomeReport]]) -> dict[str, _Tally]:
        """Each model's rows in one call (one refresh of its live figures per file)."""
        tallies: dict[str, _Tally] = {}
        for model, reports in batches.items():
            tally = tallies[model] = _Tally()
            try:
                receipt = self._plane.record_outcomes(model, reports)
            except AgentError as error:
                self._plane.count_refusal(model, IntakePath.drop_folder, error)
                tally.refused[error.reason] += len(reports)
            else:
                tally.recorded, tally.joined = receipt.received, receipt.joined
        return tallies

    def _fail(self, path: Path, name: str, stem: str, error: AgentError, started: str) -> None:
        """Move the file to ``failed/``, then write its report beside it (last, as the
        drop folder's own failures)."""
        target = self._folders.failed / stem
        move_durably(path, target)
        report = {
            "file": name,
            "kind": "outcomes",
            "reason": error.reason,
            "detail": str(error),
            "started": started,
            "failed": utc_now(),
        }
        self._write(target.with_name(f"{stem}.error.json"), report)
        log.warning("drop folder outcomes file unreadable", extra={"reason": error.reason})

    def _write(self, target: Path, report: dict[str, Any]) -> None:
        data = json.dumps(report, indent=1).encode()
        write_atomic(target, data, self._folders.mode, exact=True)


def _batches(table: OutcomeTable, default_model: str) -> dict[str, list[OutcomeReport]]:
    """The rows as reports, by model (an empty or absent ``model`` cell: ``default_model``);
    OutcomesError for a row without a label (the file has no label column)."""
    batches: dict[str, list[OutcomeReport]] = {}
    for rows in table.by_patient.values():
        for row in rows:
            if row.label is None:
                raise OutcomesError("outcomes header lacks column(s): label")
            model = row.groups.get(MODEL_COLUMN, MISSING_GROUP)
            model = default_model if model == MISSING_GROUP else model
            batches.setdefault(model, []).append(OutcomeReport(row.patient, row.label, row.as_of))
    return batches


def _first_line(head: bytes) -> str:
    return head[:_HEADER_MAX].split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")


def _lines(data: bytes) -> io.StringIO:
    """The file's text (UTF-8, a BOM allowed); OutcomesError when it is not UTF-8."""
    try:
        return io.StringIO(data.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError:
        raise OutcomesError("the outcomes file is not UTF-8 CSV") from None
