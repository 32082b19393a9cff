"""Drop-folder faults on the real `edge-agent serve` process: kill -9 in the middle of a
batch (then restart: every input record exactly one output, none twice) and a disk that
fills up while results are written (nothing lost: the original is kept, with the reason)."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_process import REPO, AgentProcess, start_agent
from tests.integration.reliability_support import (
    fill,
    recent_oru,
    reliability_root,
    small_tmpfs,
    wait_for,
)

pytestmark = pytest.mark.integration


def hl7_batch(count: int) -> bytes:
    """``count`` copies of the demo ORU^R01 as of now, each with its own MSH-10."""
    message = recent_oru()
    return b"".join(
        message.replace(b"ORU0000417", f"ORU{i:07d}".encode()) for i in range(1, count + 1)
    )


def drop(inbox: Path, name: str, data: bytes) -> None:
    """Deliver as a sender should: write a dot-file, then rename it into the inbox."""
    temp = inbox / f".{name}.tmp"
    temp.write_bytes(data)
    temp.rename(inbox / name)


def _drop_dirs(agent: AgentProcess) -> dict[str, Path]:
    var = agent.root / "var/demo/drop"
    return {name: var / name for name in ("inbox", "outbox", "processed", "failed", "state")}


def _records_done(state: Path) -> int:
    done = 0
    for journal in state.glob("jobs/*/journal.json"):
        try:
            done = max(done, int(json.loads(journal.read_bytes())["records_done"]))
        except (ValueError, KeyError, OSError):
            continue
    return done


def test_kill_9_mid_batch_then_restart_gives_every_record_exactly_once(tmp_path: Path) -> None:
    count = 600
    config = reliability_root(
        tmp_path,
        edit=lambda c: c["drop_folder"].update(checkpoint_records=25, checkpoint_seconds=0.2),
    )
    agent = start_agent(config)
    dirs = _drop_dirs(agent)
    try:
        drop(dirs["inbox"], "ward7.hl7", hl7_batch(count))
        kills = 0
        for threshold in (count // 4, count // 2):  # two crashes, the second one mid-resume
            wait_for(lambda t=threshold: _records_done(dirs["state"]) >= t, 60, "progress")  # type: ignore[misc]
            agent.process.send_signal(signal.SIGKILL)
            agent.process.wait(10)
            agent.log_file.close()
            kills += 1
            assert not (dirs["outbox"] / "ward7.hl7.results.ndjson").exists()
            agent = start_agent(config)
        results = dirs["outbox"] / "ward7.hl7.results.ndjson"
        wait_for(lambda: (dirs["processed"] / "ward7.hl7").exists(), 120, "the batch to finish")
    finally:
        assert agent.stop() == 0, agent.log_text()
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    labels = Counter(line["label"] for line in lines)
    assert kills == 2
    assert len(lines) == count
    assert set(labels) == {f"ORU{i:07d}" for i in range(1, count + 1)}
    assert max(labels.values()) == 1
    assert [line["position"] for line in lines] == list(range(1, count + 1))
    assert all(line["status"] == "ok" for line in lines)
    report = json.loads((dirs["outbox"] / "ward7.hl7.report.json").read_text())
    assert report["records"] == {"in": count, "ok": count, "failed": 0}
    assert not list(dirs["inbox"].iterdir()) and not list((dirs["state"] / "jobs").iterdir())
    assert sorted(p.name for p in dirs["outbox"].iterdir()) == [
        "ward7.hl7.report.json",
        "ward7.hl7.results.csv",
        "ward7.hl7.results.ndjson",
    ]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "3m") as mountpoint:
        yield mountpoint


def test_disk_full_while_writing_results_loses_nothing(tmp_path: Path, small_disk: Path) -> None:
    """The drop folder on a small disk that fills up while the results are written.

    What the agent does today: the job cannot go on and cannot be failed either (its
    journal needs space too), so the claimed original stays in ``state/jobs/`` and the job
    is retried 60 s later or at the next start. Here space comes back and the agent is
    restarted: the file then scores in full, every record exactly once."""

    def on_small_disk(config: dict[str, Any]) -> None:
        config["drop_folder"].update(
            {n: str(small_disk / n) for n in ("inbox", "outbox", "processed", "failed", "state")}
        )

    count = 200  # ~0.8 MB in; its results need ~80 kB more
    config = reliability_root(tmp_path, edit=on_small_disk)
    agent = start_agent(config)
    try:
        batch = hl7_batch(count)
        filler = fill(small_disk, leave=len(batch) + 30_000)
        drop(small_disk / "inbox", "full.hl7", batch)
        wait_for(lambda: "drop folder step failed" in agent.log_text(), 30, "the write to fail")
        assert agent.process.poll() is None  # the agent goes on
        with agent.client() as client:
            assert client.get("/healthz").status_code == 200
        kept = list((small_disk / "state/jobs").glob("*/in/full.hl7"))
        in_failed = small_disk / "failed/full.hl7"
        assert kept or in_failed.exists()  # the original is never lost
        assert (kept[0] if kept else in_failed).read_bytes() == batch
        assert not list((small_disk / "outbox").iterdir())  # nothing half-published
        assert agent.stop() == 0, agent.log_text()
        filler.unlink()  # space comes back
        agent = start_agent(config)
        if not kept:  # it was failed: the operator drops it again
            in_failed.rename(small_disk / "inbox/full.hl7")
        wait_for(lambda: (small_disk / "processed/full.hl7").exists(), 60, "the file to score")
        lines = [
            json.loads(line)
            for line in (small_disk / "outbox/full.hl7.results.ndjson").read_text().splitlines()
        ]
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert [line["label"] for line in lines] == [f"ORU{i:07d}" for i in range(1, count + 1)]
    assert all(line["status"] == "ok" for line in lines)
    assert not list((small_disk / "state/jobs").iterdir())


def _report(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_symlinks_to_a_fifo_and_a_root_only_file_are_refused_unread(tmp_path: Path) -> None:
    """What a hostile sender can leave in the inbox: a symlink to a FIFO (an open would
    wedge the folder, across restarts) and one to a file only the agent's user may read
    (its records would be published). Each goes to failed/ with a report, unread; the
    folder goes on scoring, and its results are private (0600) under a 022 umask."""
    agent = start_agent(reliability_root(tmp_path))
    dirs = _drop_dirs(agent)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    secret = tmp_path / "root-only.hl7"
    secret.write_bytes(hl7_batch(1).replace(b"ORU0000001", b"SECRET0001"))
    secret.chmod(0o600)
    try:
        (dirs["inbox"] / "wedge.hl7").symlink_to(fifo)
        (dirs["inbox"] / "steal.hl7").symlink_to(secret)
        for name in ("wedge.hl7", "steal.hl7"):
            wait_for(lambda n=name: _report(dirs["failed"] / f"{n}.error.json"), 30, name)  # type: ignore[misc]
            assert _report(dirs["failed"] / f"{name}.error.json")["reason"] == "not_regular"
            assert (dirs["failed"] / name).is_symlink()
        drop(dirs["inbox"], "next.hl7", hl7_batch(2))
        wait_for(lambda: (dirs["processed"] / "next.hl7").exists(), 60, "the next file")
    finally:
        assert agent.stop() == 0, agent.log_text()
    published = b"".join(p.read_bytes() for p in dirs["outbox"].iterdir())
    assert b"SECRET0001" not in published
    assert sorted(p.name for p in dirs["outbox"].iterdir()) == [
        "next.hl7.report.json",
        "next.hl7.results.csv",
        "next.hl7.results.ndjson",
    ]
    for path in [*dirs["outbox"].iterdir(), *dirs["failed"].glob("*.error.json")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_writer_pausing_mid_batch_loses_nothing(tmp_path: Path) -> None:
    """The finding: a writer that pauses 3.5 s in the middle of a 200-message HL7 batch,
    with the default 2 s settle time. The batch opened with FHS/BHS, so it waits for its
    trailer and all 200 messages are scored."""
    config = reliability_root(tmp_path, edit=lambda c: c["drop_folder"].update(settle_seconds=2.0))
    agent = start_agent(config)
    dirs = _drop_dirs(agent)
    batch = hl7_batch(200)
    half = batch.index(b"MSH|", len(batch) // 2)
    try:
        wait_for(dirs["inbox"].is_dir, 30, "the drop folder to start")
        target = dirs["inbox"] / "ward7.hl7"
        with target.open("wb") as stream:
            stream.write(b"FHS|^~\\&|MON|H\rBHS|^~\\&|MON|H\r" + batch[:half])
            stream.flush()
            time.sleep(3.5)  # the writer's pause, as found
            assert target.exists(), "taken before its trailer"
            stream.write(batch[half:] + b"BTS|200\rFTS|1\r")
        report = dirs["outbox"] / "ward7.hl7.report.json"
        wait_for(lambda: _report(report), 60, "the batch to be scored")
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert _report(report)["records"] == {"in": 200, "ok": 200, "failed": 0}


def test_one_line_json_document_over_4_mb_is_read_as_a_document(tmp_path: Path) -> None:
    """A 5 MB Bundle on one line is one document under ``document_max`` (64 MB), not a
    first NDJSON line over the 4 MB line limit."""
    bundle = json.loads((REPO / "fixtures/fhir/demo-patient-bundle.json").read_bytes())
    bundle["entry"].append(
        {"resource": {"resourceType": "Basic", "id": "pad", "code": {"text": "x" * 5_000_000}}}
    )
    agent = start_agent(reliability_root(tmp_path))
    dirs = _drop_dirs(agent)
    try:
        drop(dirs["inbox"], "big.json", json.dumps(bundle).encode())
        wait_for(lambda: _report(dirs["outbox"] / "big.json.report.json"), 60, "the document")
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert _report(dirs["outbox"] / "big.json.report.json")["records"]["in"] == 1
    assert not (dirs["failed"] / "big.json").exists()
