"""Drop-folder faults on the real `edge-agent serve` process: kill -9 in the middle of a
batch (then restart: every input record exactly one output, none twice) and a disk that
fills up while results are written (nothing lost: the original is kept, with the reason)."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_process import AgentProcess, start_agent
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
        "ward7.hl7.report.json", "ward7.hl7.results.csv", "ward7.hl7.results.ndjson"
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
        lines = [json.loads(line) for line in
                 (small_disk / "outbox/full.hl7.results.ndjson").read_text().splitlines()]
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert [line["label"] for line in lines] == [f"ORU{i:07d}" for i in range(1, count + 1)]
    assert all(line["status"] == "ok" for line in lines)
    assert not list((small_disk / "state/jobs").iterdir())
