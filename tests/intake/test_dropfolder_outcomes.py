"""Outcome CSVs in the drop folder, on real folders with a real observer: recorded through
``record_outcomes`` with a report in the outbox counting recorded, joined and refused rows
by reason; an unreadable one goes to ``failed/`` with a report and nothing recorded; other
files are still scored."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AgentError, NotEnabled, UnknownModel
from agent.intake.dropfolder.folder import DropFolder
from agent.limits import Limits
from agent.types import OutcomeReceipt, OutcomeReport
from tests.intake.dropfolder_support import MODEL, RecordScorer, folder_config
from tests.intake.test_dropfolder import bundle_line, drop_by_rename, wait_for

SECRET = "MRN-ZQX-4417"  # a distinctive identifier: must appear in no report


class OutcomeRecorder(RecordScorer):
    """Joins an outcome when its patient starts with ``known``; knows only ``MODEL``."""

    def __init__(self, refuse: AgentError | None = None) -> None:
        super().__init__()
        self.refuse = refuse
        self.recorded: list[tuple[str, OutcomeReport]] = []

    def record_outcomes(self, model: str, reports: Sequence[OutcomeReport]) -> OutcomeReceipt:
        if self.refuse is not None:
            raise self.refuse
        if model != MODEL:
            raise UnknownModel("model is not configured here")
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


def test_a_site_without_live_performance_refuses_every_row(tmp_path: Path) -> None:
    recorder = OutcomeRecorder(refuse=NotEnabled("live performance is not enabled"))
    drop = DropFolder(folder_config(tmp_path), recorder, Limits())
    drop.start()
    try:
        drop_by_rename(tmp_path / "inbox", "o.csv", "patient,as_of,label\nx,2026-03-16,1\n")
        report = wait_for(lambda: read_json(tmp_path / "outbox" / "o.csv.report.json"))
    finally:
        drop.stop()
    assert (report["recorded"], report["refused"]) == (0, {"not_enabled": 1})
    assert (MODEL, "not_enabled") in recorder.refusals


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
