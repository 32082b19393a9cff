"""A drop folder process for the crash tests of outcome files: its data plane records
outcomes in a ledger file with the prediction store's rule (a patient's prediction is
labelled once; only patients whose reference starts with ``known`` have one), each label
durable at once as the store's, and it can SIGKILL itself in the middle of a call:

    python -m tests.intake.dropfolder_outcomes_support ROOT LEDGER [MODEL AFTER]

kills the process when the call for MODEL has labelled AFTER rows (0: at its start; the
number of rows: after every row, before the call returns)."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.durable import write_atomic
from agent.types import OutcomeReceipt, OutcomeReport
from tests.intake.dropfolder_support import RecordScorer, serve


class LedgerRecorder(RecordScorer):
    """Labels into ``ledger``: ``labels`` (model -> patient -> label) and ``calls`` (the
    models called, in order)."""

    def __init__(self, ledger: Path, kill: tuple[str, int] | None = None) -> None:
        super().__init__()
        self.ledger = ledger
        self.kill = kill

    def record_outcomes(self, model: str, reports: Sequence[OutcomeReport]) -> OutcomeReceipt:
        state = read_ledger(self.ledger)
        state["calls"].append(model)
        self._save(state)
        labels = state["labels"].setdefault(model, {})
        joined = 0
        for done, report in enumerate(reports):
            self._maybe_die(model, done)
            if report.reference.startswith("known") and report.reference not in labels:
                labels[report.reference] = report.label
                joined += 1
                self._save(state)
        self._maybe_die(model, len(reports))
        return OutcomeReceipt(len(reports), joined)

    def _maybe_die(self, model: str, done: int) -> None:
        if self.kill == (model, done):
            os.kill(os.getpid(), signal.SIGKILL)

    def _save(self, state: dict[str, Any]) -> None:
        write_atomic(self.ledger, json.dumps(state).encode())


def read_ledger(ledger: Path) -> dict[str, Any]:
    if not ledger.exists():
        return {"labels": {}, "calls": []}
    state: dict[str, Any] = json.loads(ledger.read_text())
    return state


if __name__ == "__main__":
    kill = (sys.argv[3], int(sys.argv[4])) if len(sys.argv) > 3 else None
    serve(Path(sys.argv[1]), LedgerRecorder(Path(sys.argv[2]), kill), 0.05)
