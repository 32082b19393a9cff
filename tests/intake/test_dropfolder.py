"""The drop folder with a real watchdog observer on real folders."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.errors import StoreError
from agent.intake.dropfolder.config import DropFolderConfig
from agent.intake.dropfolder.folder import DropFolder
from agent.limits import Limits
from tests.intake.dropfolder_support import RecordScorer, folder_config, risk_of

DEADLINE = 10.0  # seconds any single wait may take before the test fails


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def bundle_line(pid: str, value: float) -> str:
    entries = [
        {"resourceType": "Patient", "id": pid},
        {
            "resourceType": "Observation",
            "subject": {"reference": f"Patient/{pid}"},
            "valueQuantity": {"value": value},
        },
    ]
    body = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in entries],
    }
    return json.dumps(body) + "\n"


def drop_by_rename(inbox: Path, name: str, content: str) -> None:
    """How a well-behaved sender delivers: write a hidden temp file, then rename."""
    temp = inbox / f".{name}.sending"
    temp.write_text(content)
    os.rename(temp, inbox / name)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[DropFolder, Path]]:
    drop = DropFolder(folder_config(tmp_path), RecordScorer(), Limits())
    drop.start()
    try:
        yield drop, tmp_path
    finally:
        drop.stop()


def test_file_in_results_out_original_processed(running: tuple[DropFolder, Path]) -> None:
    _, root = running
    drop_by_rename(
        root / "inbox", "ward.ndjson", "".join(bundle_line(f"p{i}", i) for i in range(4))
    )
    report = wait_for(lambda: _read_json(root / "outbox" / "ward.ndjson.report.json"))
    assert report["records"] == {"in": 4, "ok": 4, "failed": 0}
    assert sorted(p.name for p in (root / "outbox").iterdir()) == [
        "ward.ndjson.report.json",
        "ward.ndjson.results.csv",
        "ward.ndjson.results.ndjson",
        "ward.ndjson.riskassessment.ndjson",
    ]
    lines = (root / "outbox" / "ward.ndjson.results.ndjson").read_text().splitlines()
    assert [json.loads(x)["outputs"]["risk"] for x in lines] == [risk_of(i) for i in range(4)]
    wait_for(lambda: (root / "processed" / "ward.ndjson").exists())
    assert list((root / "inbox").iterdir()) == []
    wait_for(lambda: list((root / "state" / "jobs").iterdir()) == [])


def test_unreadable_file_goes_to_failed_with_report(running: tuple[DropFolder, Path]) -> None:
    _, root = running
    drop_by_rename(root / "inbox", "scan.pdf", "%PDF-1.7 not a record\n")
    report = wait_for(lambda: _read_json(root / "failed" / "scan.pdf.error.json"))
    assert report["reason"] == "unknown_format" and report["file"] == "scan.pdf"
    assert (root / "failed" / "scan.pdf").read_text() == "%PDF-1.7 not a record\n"
    assert list((root / "outbox").iterdir()) == []


def test_file_written_slowly_is_not_taken_half_written(running: tuple[DropFolder, Path]) -> None:
    _, root = running
    target = root / "inbox" / "slow.ndjson"
    with target.open("w") as stream:
        for i in range(6):  # 6 pauses of 0.15 s: longer in total than the 0.3 s settle time
            stream.write(bundle_line(f"p{i}", i))
            stream.flush()
            time.sleep(0.15)
            assert target.exists(), "taken while still being written"
    report = wait_for(lambda: _read_json(root / "outbox" / "slow.ndjson.report.json"))
    assert report["records"]["in"] == 6


def test_same_name_twice_keeps_both_outputs(running: tuple[DropFolder, Path]) -> None:
    _, root = running
    drop_by_rename(root / "inbox", "daily.ndjson", bundle_line("a", 1))
    wait_for(lambda: (root / "processed" / "daily.ndjson").exists())
    drop_by_rename(root / "inbox", "daily.ndjson", bundle_line("b", 2) + bundle_line("c", 3))
    report = wait_for(lambda: _read_json(root / "outbox" / "daily.2.ndjson.report.json"))
    assert report["records"]["in"] == 2 and report["file"] == "daily.ndjson"
    assert _read_json(root / "outbox" / "daily.ndjson.report.json")["records"]["in"] == 1
    wait_for(lambda: (root / "processed" / "daily.2.ndjson").exists())


def test_files_waiting_at_start_are_scored(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "early.hl7").write_text(
        "MSH|^~\\&|LAB|H|EDGE|H|2024||ORU^R01|C1|P|2.5\rPID|1||M1\rOBX|1|NM|x||12|/min\r"
    )
    (inbox / ".hidden.ndjson").write_text(bundle_line("h", 1))
    (inbox / "copying.csv.filepart").write_text("a,b\n1,2\n")
    drop = DropFolder(folder_config(tmp_path), RecordScorer(), Limits())
    drop.start()
    try:
        report = wait_for(lambda: _read_json(tmp_path / "outbox" / "early.hl7.report.json"))
        assert report["records"] == {"in": 1, "ok": 1, "failed": 0}
        time.sleep(0.5)
        assert sorted(p.name for p in inbox.iterdir()) == [".hidden.ndjson", "copying.csv.filepart"]
    finally:
        drop.stop()


def test_stop_mid_file_then_restart_finishes_exactly_once(tmp_path: Path) -> None:
    config = folder_config(tmp_path, checkpoint_records=2)
    drop = DropFolder(config, RecordScorer(delay=0.02), Limits())
    drop.start()
    drop_by_rename(
        tmp_path / "inbox", "big.ndjson", "".join(bundle_line(f"p{i}", i) for i in range(60))
    )
    wait_for(lambda: _journal_done(tmp_path) >= 4)
    started = time.monotonic()
    drop.stop()
    assert time.monotonic() - started < 1.0  # stops within one record and a checkpoint
    done = _journal_done(tmp_path)
    assert 4 <= done < 60

    again = DropFolder(config, RecordScorer(), Limits())
    again.start()
    try:
        report = wait_for(lambda: _read_json(tmp_path / "outbox" / "big.ndjson.report.json"))
    finally:
        again.stop()
    assert report["records"] == {"in": 60, "ok": 60, "failed": 0}
    lines = (tmp_path / "outbox" / "big.ndjson.results.ndjson").read_text().splitlines()
    assert [json.loads(x)["position"] for x in lines] == list(range(1, 61))


def _job_left_in_publishing(root: Path, job_id: str, name: str, records: int) -> DropFolder:
    """What a crash during publishing leaves: a scored job whose outputs may be out."""
    drop = DropFolder(folder_config(root), RecordScorer(), Limits())
    folder = root / "state" / "jobs" / job_id
    (folder / "in").mkdir(parents=True)
    (folder / "in" / name).write_text("".join(bundle_line(f"p{i}", i) for i in range(records)))
    job = drop.engine.begin(folder, folder / "in" / name, name, name, job_id)
    assert drop.engine.run(job)
    (root / "outbox").mkdir()
    drop.engine.publish(job, root / "outbox")
    return drop


def test_restart_after_crash_while_publishing(tmp_path: Path) -> None:
    drop = _job_left_in_publishing(tmp_path, "00000000000000000001", "late.ndjson", 3)
    (tmp_path / "outbox" / ".late.ndjson.results.csv.partial").write_text("half a tab")
    drop.start()
    try:
        wait_for(lambda: (tmp_path / "processed" / "late.ndjson").exists())
        wait_for(lambda: list((tmp_path / "state" / "jobs").iterdir()) == [])
    finally:
        drop.stop()
    lines = (tmp_path / "outbox" / "late.ndjson.results.ndjson").read_text().splitlines()
    assert [json.loads(x)["position"] for x in lines] == [1, 2, 3]
    assert (tmp_path / "outbox" / "late.ndjson.results.csv").read_text().count("\n") == 4
    assert not (tmp_path / "outbox" / ".late.ndjson.results.csv.partial").exists()


def test_restart_after_crash_once_the_original_was_moved(tmp_path: Path) -> None:
    drop = _job_left_in_publishing(tmp_path, "00000000000000000002", "done.ndjson", 2)
    folder = tmp_path / "state" / "jobs" / "00000000000000000002"
    (tmp_path / "processed").mkdir()
    os.rename(folder / "in" / "done.ndjson", tmp_path / "processed" / "done.ndjson")
    published = (tmp_path / "outbox" / "done.ndjson.results.ndjson").read_bytes()
    drop.start()
    try:
        wait_for(lambda: not folder.exists())
    finally:
        drop.stop()
    assert (tmp_path / "outbox" / "done.ndjson.results.ndjson").read_bytes() == published
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == ["done.ndjson"]


def test_inbox_gone_and_back(
    running: tuple[DropFolder, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A network share that drops away: the worker carries on once the inbox is back."""
    _, root = running
    shutil.rmtree(root / "inbox")
    time.sleep(0.5)  # a few scans fail meanwhile
    (root / "inbox").mkdir()
    (root / "inbox" / "back.ndjson").write_text(bundle_line("b", 1))
    report = wait_for(lambda: _read_json(root / "outbox" / "back.ndjson.report.json"))
    assert report["records"]["ok"] == 1
    assert "drop folder cannot read its folders" in caplog.messages


def test_unusable_journal_starts_the_file_over(tmp_path: Path) -> None:
    drop = _job_left_in_publishing(tmp_path, "00000000000000000003", "torn.ndjson", 4)
    folder = tmp_path / "state" / "jobs" / "00000000000000000003"
    (folder / "journal.json").write_text('{"job_id": ')  # what only a disk fault could leave
    for published in (tmp_path / "outbox").iterdir():
        published.unlink()
    drop.start()
    try:
        report = wait_for(lambda: _read_json(tmp_path / "outbox" / "torn.ndjson.report.json"))
    finally:
        drop.stop()
    assert report["records"] == {"in": 4, "ok": 4, "failed": 0}
    lines = (tmp_path / "outbox" / "torn.ndjson.results.ndjson").read_text().splitlines()
    assert [json.loads(x)["position"] for x in lines] == [1, 2, 3, 4]


class LateModel(RecordScorer):
    """The model is not installed for the first few calls (a pull still under way)."""

    def __init__(self, unavailable_calls: int) -> None:
        super().__init__()
        self.unavailable_calls = unavailable_calls

    def score(self, request: Any) -> Any:
        if self.unavailable_calls > 0:
            self.unavailable_calls -= 1
            raise StoreError("model 'demo' has no verified bundle loaded yet")
        return super().score(request)


def test_file_waits_while_the_model_cannot_score(tmp_path: Path) -> None:
    scorer = LateModel(unavailable_calls=3)
    config = folder_config(tmp_path, retry_seconds=0.2, checkpoint_records=2)
    drop = DropFolder(config, scorer, Limits())
    drop.start()
    try:
        content = "".join(bundle_line(f"p{i}", i) for i in range(5))
        drop_by_rename(tmp_path / "inbox", "early.ndjson", content)
        report = wait_for(lambda: _read_json(tmp_path / "outbox" / "early.ndjson.report.json"))
    finally:
        drop.stop()
    assert report["records"] == {"in": 5, "ok": 5, "failed": 0}
    assert scorer.unavailable_calls == 0


def test_config_checks() -> None:
    with pytest.raises(ValidationError, match="needs the model"):
        DropFolderConfig(enabled=True)
    with pytest.raises(ValidationError, match="distinct"):
        DropFolderConfig(inbox=Path("/x/in"), outbox=Path("/x/in"))
    with pytest.raises(ValidationError, match="extra"):
        DropFolderConfig.model_validate({"inbx": "/x"})
    relative = DropFolderConfig.model_validate({"inbox": "in"}, context={"base_dir": "/etc/agent"})
    assert relative.inbox == Path("/etc/agent/in")
    assert relative.outbox == Path("/etc/agent/drop/outbox")  # defaults resolve too


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _journal_done(root: Path) -> int:
    for journal in (root / "state" / "jobs").glob("*/journal.json"):
        try:
            return int(json.loads(journal.read_text())["records_done"])
        except FileNotFoundError:
            continue
    return 0
