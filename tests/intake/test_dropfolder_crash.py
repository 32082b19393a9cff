"""Crash safety for real: a drop folder process killed with SIGKILL, again and again, at
arbitrary moments (mid-record, mid-checkpoint, mid-publish), then restarted. In the end
every input record has exactly one result line, and every input file is in processed/."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.intake.dropfolder_support import risk_of

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
KILLS = 10


def _start(root: Path, delay: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.intake.dropfolder_support", str(root), str(delay), "0.05"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.stdout is not None
    process.stdout.close()


def _inputs(inbox: Path) -> dict[str, int]:
    """Three files, three formats; returns records per file."""
    inbox.mkdir(parents=True)
    ndjson = []
    for i in range(60):
        entries = [
            {"resourceType": "Patient", "id": f"n{i}"},
            {
                "resourceType": "Observation",
                "subject": {"reference": f"Patient/n{i}"},
                "valueQuantity": {"value": i},
            },
        ]
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in entries],
        }
        ndjson.append(json.dumps(bundle))
    (inbox / "a.ndjson").write_text("\n".join(ndjson) + "\n")
    (inbox / "b.csv").write_text("label,hr,temp\n" + "".join(f"c{i},{i},1\n" for i in range(60)))
    messages = [
        f"MSH|^~\\&|LAB|H|EDGE|H|2024||ORU^R01|C{i}|P|2.5\rPID|1||h{i}\rOBX|1|NM|x||{i}|/min"
        for i in range(40)
    ]
    (inbox / "c.hl7").write_text("\r".join(messages) + "\r")
    return {"a.ndjson": 60, "b.csv": 60, "c.hl7": 40}


def _progress(root: Path) -> list[tuple[str, int]]:
    """(state, records committed) of the job in progress, if any."""
    found = []
    for journal in (root / "state" / "jobs").glob("*/journal.json"):
        try:
            data = json.loads(journal.read_text())
        except FileNotFoundError:
            continue
        found.append((data["state"], data["records_done"]))
    return found


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    expected = _inputs(tmp_path / "inbox")
    outbox = tmp_path / "outbox"
    processed = tmp_path / "processed"
    rng = random.Random(7)
    killed_at: list[tuple[str, int]] = []
    for _ in range(KILLS):
        if all((processed / name).exists() for name in expected):
            break
        process = _start(tmp_path, delay=0.01)
        time.sleep(rng.uniform(0.1, 0.5))
        _kill(process)
        killed_at += _progress(tmp_path)
    assert any(state == "scoring" and done > 0 for state, done in killed_at), killed_at

    process = _start(tmp_path, delay=0.0)  # and now let it finish
    deadline = time.monotonic() + 15
    while not all((processed / name).exists() for name in expected):
        assert time.monotonic() < deadline, "the restarted drop folder did not finish"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert process.stdout is not None
    process.stdout.close()

    for name, count in expected.items():
        report = json.loads((outbox / f"{name}.report.json").read_text())
        assert report["records"] == {"in": count, "ok": count, "failed": 0}, name
        lines = [
            json.loads(x) for x in (outbox / f"{name}.results.ndjson").read_text().splitlines()
        ]
        assert [line["position"] for line in lines] == list(range(1, count + 1)), name
        assert all(line["outputs"]["risk"] == _expected_risk(name, line) for line in lines), name
        assert (tmp_path / "processed" / name).exists()
        table = (outbox / f"{name}.results.csv").read_text().splitlines()
        assert len(table) == count + 1
    assert list((tmp_path / "inbox").iterdir()) == []
    assert list((tmp_path / "state" / "jobs").iterdir()) == []
    assert list((tmp_path / "failed").iterdir()) == []
    leftovers = [p.name for p in outbox.iterdir() if p.name.startswith(".")]
    assert leftovers == [] or all(p.endswith(".partial") for p in leftovers)
    assert sorted(os.listdir(processed)) == sorted(expected)


def _expected_risk(name: str, line: dict[str, object]) -> float:
    index = int(line["position"]) - 1  # type: ignore[call-overload]
    if name == "b.csv":
        return risk_of(index + 1)
    return risk_of(index)
