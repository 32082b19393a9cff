"""Outcome CSVs dropped into the inbox: outcomes that arrived after the predictions, in the
columns ``edge-agent validate --outcomes`` reads (``patient,as_of,label[,model]``; the one
reader, ``agent.validation.outcomes_csv``), recorded through ``DataPlane.record_outcomes``,
the one join path (docs/drop-folder.md, "Outcome files").

A claimed file whose first line names the ``patient`` and ``as_of`` columns is one; any
other file goes on to the batch engine. ``as_of`` is when the outcome was known (as the
HTTP body's ``time``): it labels that patient's predictions made within
``performance.horizon_hours`` before it. An empty or absent ``model`` cell is the drop
folder's model. Each model's rows are one call. The report (``<stem>.report.json`` in the
outbox) counts the rows recorded, joined to a prediction or not, and refused by reason
(``unknown_model``...), per model. Neither report names a patient.

Nothing is lost: a file that cannot be read as outcomes, or arrives while live
performance is off (``not_enabled``), goes to ``failed/`` with ``<stem>.error.json``, to
be dropped again; rows of a model configured but not loaded yet (``store``) wait in the
job folder and are tried again, as a scored file waits for its model. What each model's
call returned is journalled in the job folder (``outcomes.json``), so a retry or a
restart records each model's rows once and the report counts the whole file. Only a
model whose call a crash interrupted is recorded again; the store labels a prediction
once, so nothing is joined twice, but its joins made before the crash then count as
unmatched: the report names such models under ``interrupted``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.batch.engine import utc_now
from agent.batch.inputs import FileIdentity, InputPolicy, open_input
from agent.batch.items import UnreadableFile
from agent.dataplane import DataPlane
from agent.durable import move_durably, write_atomic
from agent.errors import AgentError, NotEnabled, OutcomesError, StoreError
from agent.types import IntakePath, OutcomeReport
from agent.validation.outcomes_csv import (
    MISSING_GROUP,
    OutcomeTable,
    outcomes_header,
    read_outcome_lines,
)

log = logging.getLogger(__name__)

MODEL_COLUMN = "model"
JOURNAL_NAME = "outcomes.json"  # in the job folder; the batch engine's is journal.json
_HEADER_MAX = 4096  # bytes of the first line looked at to tell an outcomes CSV


@dataclass
class _Tally:
    """What became of one model's rows."""

    recorded: int = 0
    joined: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        """As the report gives them: ``unmatched`` were recorded but joined no prediction."""
        return {
            "recorded": self.recorded,
            "joined": self.joined,
            "unmatched": self.recorded - self.joined,
            "refused": dict(self.refused),
        }


@dataclass
class OutcomeJournal:
    """An outcome file's progress in its job folder, replaced atomically at each step."""

    name: str  # as it arrived
    stem: str  # what its report and original are named after
    started: str  # ISO 8601, UTC
    models: dict[str, _Tally] = field(default_factory=dict)  # calls that returned
    pending: str | None = None  # the model whose call began and has not returned
    interrupted: list[str] = field(default_factory=list)  # models recorded again
    failure: dict[str, str] | None = None  # reason, detail, failed: the file goes to failed/

    def save(self, folder: Path) -> None:
        write_atomic(folder / JOURNAL_NAME, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, folder: Path) -> OutcomeJournal | None:
        """None when the job is not an outcome file's, or its journal is unreadable (a
        disk fault: the job then starts over from its claimed original)."""
        try:
            data = json.loads((folder / JOURNAL_NAME).read_bytes())
            models = {m: _Tally(**t) for m, t in data.pop("models").items()}
            return cls(**data, models=models)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def totals(self) -> _Tally:
        total = _Tally()
        refused: Counter[str] = Counter()
        for tally in self.models.values():
            total.recorded += tally.recorded
            total.joined += tally.joined
            refused.update(tally.refused)
        total.refused = dict(refused)
        return total


@dataclass(frozen=True)
class Waiting:
    """An outcome file waits: ``model`` is configured but cannot record now (``reason``)."""

    model: str
    reason: str


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

    def take(self, folder: Path, name: str, stem: str, expected: FileIdentity | None) -> bool:
        """Make the job ``folder`` (its claimed ``in/<name>``) an outcome file's, to be
        filed as ``stem``, if the file is an outcomes CSV; False, touching nothing, when it
        is not one (or cannot be opened: the batch engine refuses it with its reason)."""
        try:
            stream = open_input(folder / "in" / name, self._policy, expected)
        except (UnreadableFile, OSError):
            return False
        with stream:
            if not outcomes_header(_first_line(stream.peek(_HEADER_MAX))):
                return False
        OutcomeJournal(name, stem, utc_now()).save(folder)
        return True

    def file(self, folder: Path) -> Waiting | None:
        """Record the outcome job in ``folder`` from where its journal says, publish its
        report and move the original to ``processed/`` (``failed/`` when unreadable or
        live performance is off); None once filed, else what it waits for. Each step can
        be repeated after a crash."""
        journal = OutcomeJournal.load(folder)
        if journal is None:
            raise FileNotFoundError(folder / JOURNAL_NAME)
        path = folder / "in" / journal.name
        if journal.failure is None and os.path.lexists(path):
            try:
                batches = self._read(path)
            except (UnreadableFile, OutcomesError) as error:
                journal.failure = _failure(error)
                journal.save(folder)
            else:
                waiting = self._record(folder, journal, batches)
                if waiting is not None:
                    return waiting
                if journal.failure is None:
                    self._publish(path, journal, sum(len(r) for r in batches.values()))
        if journal.failure is not None:
            self._fail(path, journal, journal.failure)
        return None

    def _read(self, path: Path) -> dict[str, list[OutcomeReport]]:
        with open_input(path, self._policy) as stream:
            if stream.identity.size > self._size_max:
                raise UnreadableFile("too_large", f"over {self._size_max} bytes")
            data = stream.read()
            stream.verify_unchanged()
        return _batches(read_outcome_lines(_lines(data)), self._model)

    def _record(
        self, folder: Path, journal: OutcomeJournal, batches: dict[str, list[OutcomeReport]]
    ) -> Waiting | None:
        """Each model's rows in one call (one refresh of its live figures per file),
        skipping the models the journal says were recorded."""
        if journal.pending is not None and journal.pending not in journal.interrupted:
            journal.interrupted.append(journal.pending)
        for model, reports in batches.items():
            if model in journal.models:
                continue
            journal.pending = model
            journal.save(folder)
            tally = _Tally()
            try:
                receipt = self._plane.record_outcomes(model, reports)
            except StoreError as error:  # configured, not loaded: nothing recorded yet
                journal.pending = None
                journal.save(folder)
                return Waiting(model, error.reason)
            except AgentError as error:
                self._plane.count_refusal(model, IntakePath.drop_folder, error)
                if isinstance(error, NotEnabled):  # no model can record: keep the file
                    journal.pending, journal.failure = None, _failure(error)
                    journal.save(folder)
                    return None
                tally.refused[error.reason] = len(reports)
            else:
                tally.recorded, tally.joined = receipt.received, receipt.joined
            journal.models[model], journal.pending = tally, None
            journal.save(folder)
        return None

    def _publish(self, path: Path, journal: OutcomeJournal, rows: int) -> None:
        """The report into the outbox, then the original to ``processed/``."""
        total = journal.totals()
        report = {
            "file": journal.name,
            "kind": "outcomes",
            "rows": rows,
            **total.counts(),
            "models": {model: tally.counts() for model, tally in journal.models.items()},
            "interrupted": journal.interrupted,
            "started": journal.started,
            "finished": utc_now(),
        }
        self._write(self._folders.outbox / f"{journal.stem}.report.json", report)
        move_durably(path, self._folders.processed / journal.stem)
        log.info(
            "drop folder outcomes recorded",
            extra={"count": total.recorded, "status": "ok" if not total.refused else "partial"},
        )

    def _fail(self, path: Path, journal: OutcomeJournal, failure: dict[str, str]) -> None:
        """Move the file to ``failed/``, then write its report beside it (last, as the
        drop folder's own failures); a crash between the two is finished on resume."""
        target = self._folders.failed / journal.stem
        report_path = target.with_name(f"{journal.stem}.error.json")
        if os.path.lexists(path):
            move_durably(path, target)
        elif report_path.exists() or not os.path.lexists(target):
            return
        report = {
            "file": journal.name,
            "kind": "outcomes",
            **failure,
            "models": {model: tally.counts() for model, tally in journal.models.items()},
            "started": journal.started,
        }
        self._write(report_path, report)
        log.warning("drop folder outcomes file failed", extra={"reason": failure["reason"]})

    def _write(self, target: Path, report: dict[str, Any]) -> None:
        data = json.dumps(report, indent=1).encode()
        write_atomic(target, data, self._folders.mode, exact=True)


def _failure(error: AgentError) -> dict[str, str]:
    return {"reason": error.reason, "detail": str(error), "failed": utc_now()}


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
