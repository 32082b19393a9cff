"""Outcome CSVs in the drop folder, on real folders with a real observer: recorded through
``record_outcomes`` with a report in the outbox counting recorded, joined and refused rows
by reason; an unreadable one, or one arriving while live performance is off, goes to
``failed/`` with a report and nothing recorded; one whose model is not loaded yet waits
and is recorded once it is; a process killed mid-file records each model once and reports
the whole file; other files are still scored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AgentError, NotEnabled, StoreError, UnknownModel
from agent.intake.dropfolder.folder import DropFolder
from agent.intake.dropfolder.outcomes import OutcomeJournal
from agent.limits import Limits
from agent.types import OutcomeReceipt, OutcomeReport
from tests.intake.dropfolder_outcomes_support import read_ledger
from tests.intake.dropfolder_support import MODEL, RecordScorer, folder_config
from tests.intake.test_dropfolder import DEADLINE, bundle_line, drop_by_rename, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "MRN-ZQX-4417"  # a distinctive identifier: must appear in no report


class OutcomeRecorder(RecordScorer):
    """Joins an outcome when its patient starts with ``known``; ``configured`` models
    are known, those of them not ``loaded`` have no bundle yet (``store``)."""

    def __init__(
        self,
        refuse: AgentError | None = None,
        configured: Iterable[str] = (MODEL,),
        loaded: Iterable[str] = (MODEL,),
    ) -> None:
        super().__init__()
        self.refuse = refuse
        self.configured = set(configured)
        self.loaded = set(loaded)  # a test adds a model as its bundle is pulled
        self.attempts: Counter[str] = Counter()
        self.times: list[float] = []  # monotonic time of each attempt
        self.broken: set[str] = set()  # models whose next call fails unexpectedly, once
        self.recorded: list[tuple[str, OutcomeReport]] = []

    def record_outcomes(self, model: str, reports: Sequence[OutcomeReport]) -> OutcomeReceipt:
        self.attempts[model] += 1
        self.times.append(time.monotonic())
        if self.refuse is not None:
            raise self.refuse
        if model in self.broken:
            self.broken.discard(model)
            raise RuntimeError("database is locked")
        if model not in self.configured:
            raise UnknownModel("model is not configured here")
        if model not in self.loaded:
            raise StoreError("the model has no verified bundle loaded yet")
        self.recorded += [(model, r) for r in reports]
        joined = sum(r.reference.startswith("known") for r in reports)
        return OutcomeReceipt(len(reports), joined)


@pytest.fixture
def recorder() -> OutcomeRecorder:
    return OutcomeRecorder()


@pytest.fixture
def root(tmp_path: Path, recorder: OutcomeRecorder) -> Iterator[Path]:
    drop = DropFolder(folder_config(tmp_path), recorder, Limits())
    drop.start()
    try:
        yield tmp_path
    finally:
        drop.stop()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def test_outcomes_are_recorded_and_counted(root: Path, recorder: OutcomeRecorder) -> None:
    rows = [
        "\ufeffpatient,as_of,label,model",
        "known-1,2026-03-16T08:00:00Z,1,",
        f"{SECRET},2026-03-16T09:00:00+01:00,0,{MODEL}",
        "known-2,2026-03-16T10:00:00Z,0,sepsis",
        "",
    ]
    drop_by_rename(root / "inbox", "outcomes.csv", "\r\n".join(rows))
    drop_by_rename(root / "inbox", "ward.ndjson", bundle_line("p1", 3.0))
    report = wait_for(lambda: read_json(root / "outbox" / "outcomes.csv.report.json"))
    assert {k: v for k, v in report.items() if k not in ("started", "finished")} == {
        "file": "outcomes.csv",
        "kind": "outcomes",
        "rows": 3,
        "recorded": 2,
        "joined": 1,
        "unmatched": 1,
        "refused": {"unknown_model": 1},
        "models": {
            MODEL: {"recorded": 2, "joined": 1, "unmatched": 1, "refused": {}},
            "sepsis": {"recorded": 0, "joined": 0, "unmatched": 0, "refused": {"unknown_model": 1}},
        },
        "interrupted": [],
    }
    assert sorted(recorder.recorded, key=lambda r: r[1].time) == [
        (MODEL, OutcomeReport("known-1", 1, datetime(2026, 3, 16, 8, tzinfo=UTC))),
        (MODEL, OutcomeReport(SECRET, 0, datetime(2026, 3, 16, 8, tzinfo=UTC))),
    ]
    assert (MODEL, "unknown_model") not in recorder.refusals
    assert ("sepsis", "unknown_model") in recorder.refusals
    wait_for(lambda: (root / "processed" / "outcomes.csv").exists())
    wait_for(lambda: read_json(root / "outbox" / "ward.ndjson.report.json"))  # still scored
    assert SECRET not in json.dumps(report)
    wait_for(lambda: list((root / "state" / "jobs").iterdir()) == [])


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (f"patient,as_of,label\n{SECRET},2026-03-16T08:00:00Z,2\n", "line 2: column label"),
        (f"patient,as_of\n{SECRET},2026-03-16T08:00:00Z\n", "lacks column(s): label"),
        (f"patient,as_of,label\n{SECRET},yesterday,1\n", "line 2: column as_of"),
        (b"patient,as_of,label\n\xff\xfe,2026-03-16T08:00:00Z,1\n", "not UTF-8"),
    ],
)
def test_a_bad_outcomes_file_fails_whole_with_a_report(
    root: Path, recorder: OutcomeRecorder, content: str | bytes, detail: str
) -> None:
    data = content.encode() if isinstance(content, str) else content
    temp = root / "inbox" / ".late.csv.part"
    temp.write_bytes(data)
    temp.rename(root / "inbox" / "late.csv")
    report = wait_for(lambda: read_json(root / "failed" / "late.csv.error.json"))
    assert report["reason"] == "outcomes" and detail in report["detail"]
    assert report["kind"] == "outcomes" and SECRET not in json.dumps(report)
    assert (root / "failed" / "late.csv").read_bytes() == data
    assert recorder.recorded == [] and list((root / "outbox").iterdir()) == []


def test_outcomes_while_live_performance_is_off_fail_whole_and_can_be_dropped_again(
    tmp_path: Path,
) -> None:
    recorder = OutcomeRecorder(refuse=NotEnabled("live performance is not enabled"))
    drop = DropFolder(folder_config(tmp_path), recorder, Limits())
    drop.start()
    content = f"patient,as_of,label\nknown-1,2026-03-16,1\n{SECRET},2026-03-16,0\n"
    try:
        drop_by_rename(tmp_path / "inbox", "o.csv", content)
        failed = wait_for(lambda: read_json(tmp_path / "failed" / "o.csv.error.json"))
        assert (failed["kind"], failed["reason"], failed["models"]) == (
            "outcomes",
            "not_enabled",
            {},
        )
        assert "live performance" in failed["detail"] and SECRET not in json.dumps(failed)
        assert (tmp_path / "failed" / "o.csv").read_text() == content  # kept whole
        assert list((tmp_path / "outbox").iterdir()) == [] and recorder.recorded == []
        assert (MODEL, "not_enabled") in recorder.refusals
        wait_for(lambda: list((tmp_path / "state" / "jobs").iterdir()) == [])

        recorder.refuse = None  # the site enables it; the operator drops the file again
        os.rename(tmp_path / "failed" / "o.csv", tmp_path / "inbox" / "o.csv")
        report = wait_for(lambda: read_json(tmp_path / "outbox" / "o.csv.report.json"))
    finally:
        drop.stop()
    assert (report["rows"], report["recorded"], report["joined"]) == (2, 2, 1)
    assert (tmp_path / "processed" / "o.csv").read_text() == content


def test_an_outcomes_file_waits_for_its_models_and_records_each_once(tmp_path: Path) -> None:
    recorder = OutcomeRecorder(configured=(MODEL, "sepsis"), loaded=())  # nothing pulled yet
    drop = DropFolder(folder_config(tmp_path, retry_seconds=0.2), recorder, Limits())
    drop.start()
    rows = [
        "patient,as_of,label,model",
        "known-1,2026-03-16T08:00:00Z,1,",
        f"{SECRET},2026-03-16T08:00:00Z,0,{MODEL}",
        "known-2,2026-03-16T08:00:00Z,1,sepsis",
    ]
    try:
        drop_by_rename(tmp_path / "inbox", "early.csv", "\n".join(rows) + "\n")
        wait_for(lambda: recorder.attempts[MODEL] >= 2)  # tried, waited, tried again
        [job] = list((tmp_path / "state" / "jobs").iterdir())
        assert (job / "in" / "early.csv").exists()
        assert list((tmp_path / "outbox").iterdir()) == []
        assert list((tmp_path / "processed").iterdir()) == []

        recorder.loaded.add(MODEL)  # its bundle is pulled; sepsis's is not yet
        wait_for(lambda: recorder.attempts["sepsis"] >= 2)
        assert [(m, r.reference) for m, r in recorder.recorded] == [
            (MODEL, "known-1"),
            (MODEL, SECRET),
        ]
        assert list((tmp_path / "outbox").iterdir()) == []

        recorder.loaded.add("sepsis")
        report = wait_for(lambda: read_json(tmp_path / "outbox" / "early.csv.report.json"))
    finally:
        drop.stop()
    assert len(recorder.recorded) == 3 and recorder.attempts[MODEL] >= 3  # once each
    assert {k: v for k, v in report.items() if k not in ("started", "finished")} == {
        "file": "early.csv",
        "kind": "outcomes",
        "rows": 3,
        "recorded": 3,
        "joined": 2,
        "unmatched": 1,
        "refused": {},
        "models": {
            MODEL: {"recorded": 2, "joined": 1, "unmatched": 1, "refused": {}},
            "sepsis": {"recorded": 1, "joined": 1, "unmatched": 0, "refused": {}},
        },
        "interrupted": [],
    }
    assert recorder.refusals == []  # waiting for a model refuses nothing
    assert (tmp_path / "processed" / "early.csv").exists()
    assert list((tmp_path / "state" / "jobs").iterdir()) == []


def test_a_waiting_outcome_file_keeps_its_name_from_a_later_namesake(tmp_path: Path) -> None:
    recorder = OutcomeRecorder(loaded=())
    drop = DropFolder(folder_config(tmp_path, retry_seconds=0.2), recorder, Limits())
    drop.start()
    first, second = "patient,as_of,label\nknown-1,2026-03-16,1\n", "patient,as_of,label\n"
    try:
        drop_by_rename(tmp_path / "inbox", "o.csv", first)
        wait_for(lambda: recorder.attempts[MODEL] >= 1)
        drop_by_rename(tmp_path / "inbox", "o.csv", second + "x-2,2026-03-16,0\n")
        wait_for(lambda: len(list((tmp_path / "state" / "jobs").iterdir())) == 2)
        wait_for(lambda: recorder.attempts[MODEL] >= 2)  # both waited
        recorder.loaded.add(MODEL)
        names = ("o.csv", "o.2.csv")
        wait_for(lambda: all((tmp_path / "outbox" / f"{n}.report.json").exists() for n in names))
        reports = [read_json(tmp_path / "outbox" / f"{n}.report.json") for n in names]
    finally:
        drop.stop()
    assert [(r["file"], r["joined"]) for r in reports] == [("o.csv", 1), ("o.csv", 0)]
    assert (tmp_path / "processed" / "o.csv").read_text() == first


def test_an_unexpected_error_mid_file_is_retried_after_retry_seconds(tmp_path: Path) -> None:
    recorder = OutcomeRecorder(configured=(MODEL, "sepsis"), loaded=(MODEL, "sepsis"))
    recorder.broken.add("sepsis")  # its call fails as a locked database would
    config = folder_config(tmp_path, retry_seconds=1.0, poll_interval=0.1)
    drop = DropFolder(config, recorder, Limits())
    drop.start()
    rows = ["patient,as_of,label,model", "known-1,2026-03-16,1,", "known-2,2026-03-16,1,sepsis"]
    try:
        drop_by_rename(tmp_path / "inbox", "o.csv", "\n".join(rows) + "\n")
        report = wait_for(lambda: read_json(tmp_path / "outbox" / "o.csv.report.json"))
    finally:
        drop.stop()
    assert recorder.attempts == {MODEL: 1, "sepsis": 2}
    assert recorder.times[2] - recorder.times[1] >= 1.0  # waited, not the next poll
    assert (report["recorded"], report["joined"], report["interrupted"]) == (2, 2, ["sepsis"])


def test_a_crash_between_failed_and_its_report_is_finished_on_start(tmp_path: Path) -> None:
    job = tmp_path / "state" / "jobs" / "00000000000000000001"
    (job / "in").mkdir(parents=True)
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "o.csv").write_text("patient,as_of,label\nknown-1,2026-03-16,1\n")
    failure = {"reason": "not_enabled", "detail": "off", "failed": "2026-03-16T08:00:00+00:00"}
    OutcomeJournal("o.csv", "o.csv", "2026-03-16T08:00:00+00:00", failure=failure).save(job)
    recorder = OutcomeRecorder()
    drop = DropFolder(folder_config(tmp_path), recorder, Limits())
    drop.start()
    try:
        report = wait_for(lambda: read_json(tmp_path / "failed" / "o.csv.error.json"))
        wait_for(lambda: not job.exists())
    finally:
        drop.stop()
    assert (report["reason"], report["failed"]) == ("not_enabled", failure["failed"])
    assert recorder.attempts == {}


def test_an_outcomes_file_left_claimed_by_a_crash_is_recorded_on_start(tmp_path: Path) -> None:
    claimed = tmp_path / "state" / "jobs" / "00000000000000000001" / "in"
    claimed.mkdir(parents=True)
    (claimed / "o.csv").write_text("patient,as_of,label\nknown-9,2026-03-16T08:00:00Z,1\n")
    recorder = OutcomeRecorder()
    drop = DropFolder(folder_config(tmp_path), recorder, Limits())
    drop.start()
    try:
        report = wait_for(lambda: read_json(tmp_path / "outbox" / "o.csv.report.json"))
    finally:
        drop.stop()
    assert (report["recorded"], report["joined"]) == (1, 1)
    assert (tmp_path / "processed" / "o.csv").exists()
    assert not (tmp_path / "state" / "jobs" / "00000000000000000001").exists()


def _drop_folder_process(root: Path, *kill: str) -> subprocess.Popen[str]:
    module = "tests.intake.dropfolder_outcomes_support"
    command = [sys.executable, "-m", module, str(root), str(root / "ledger.json"), *kill]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.integration
@pytest.mark.parametrize(
    ("after", "joined"),
    [
        (0, {MODEL: 2, "sepsis": 1}),  # killed as sepsis's call began: every join counted
        (2, {MODEL: 2, "sepsis": 0}),  # killed as it returned: its join counts as unmatched
    ],
)
def test_a_process_killed_mid_file_records_each_model_once(
    tmp_path: Path, after: int, joined: dict[str, int]
) -> None:
    rows = [
        "patient,as_of,label,model",
        "known-1,2026-03-16T08:00:00Z,1,",
        "known-2,2026-03-16T08:00:00Z,0,",
        "other-1,2026-03-16T08:00:00Z,0,",
        "known-3,2026-03-16T08:00:00Z,1,sepsis",
        "other-2,2026-03-16T08:00:00Z,1,sepsis",
    ]
    (tmp_path / "inbox").mkdir()
    drop_by_rename(tmp_path / "inbox", "o.csv", "\n".join(rows) + "\n")
    doomed = _drop_folder_process(tmp_path, "sepsis", str(after))
    assert doomed.wait(timeout=DEADLINE) == -signal.SIGKILL
    assert doomed.stdout is not None
    doomed.stdout.close()
    assert not (tmp_path / "outbox" / "o.csv.report.json").exists()

    process = _drop_folder_process(tmp_path)
    try:
        report = wait_for(lambda: read_json(tmp_path / "outbox" / "o.csv.report.json"))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == 0
        assert process.stdout is not None
        process.stdout.close()
    ledger = read_ledger(tmp_path / "ledger.json")
    assert ledger["calls"] == [MODEL, "sepsis", "sepsis"]  # the model done before: once
    assert ledger["labels"] == {MODEL: {"known-1": 1, "known-2": 0}, "sepsis": {"known-3": 1}}
    assert (report["rows"], report["recorded"], report["refused"]) == (5, 5, {})
    assert {m: counts["joined"] for m, counts in report["models"].items()} == joined
    assert report["joined"] == sum(joined.values())
    assert report["interrupted"] == ["sepsis"]
    assert (tmp_path / "processed" / "o.csv").exists()
    assert list((tmp_path / "state" / "jobs").iterdir()) == []
