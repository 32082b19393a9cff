"""The request path now against an earlier commit, in the same run on the same machine:
each stage's CPU time as a ratio, current / before (below 1: faster now).

The earlier commit is exported with ``git archive`` into a temporary folder (the repository
is not touched); each version runs ``bench/stages.py`` in its own process, both set up once,
then measured in alternating rounds so that a busy neighbour weighs on both alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from bench.stats import median

REPO = Path(__file__).resolve().parents[1]
STAGES = REPO / "bench" / "stages.py"


@dataclass
class _Side:
    name: str
    process: subprocess.Popen[str]
    setup: dict[str, Any]
    rounds: list[dict[str, float]]

    def measure(self) -> None:
        stdin, stdout = self._pipes()
        stdin.write("go\n")
        stdin.flush()
        self.rounds.append(json.loads(stdout.readline()))

    def stop(self) -> None:
        stdin, _ = self._pipes()
        stdin.write("stop\n")
        stdin.flush()
        self.process.wait(timeout=30)

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("stages process without pipes")
        return self.process.stdin, self.process.stdout


def _export(revision: str, into: Path) -> Path:
    """The tree of ``revision`` as files under ``into`` (``git archive``, no checkout)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _start(name: str, tree: Path, calls: int) -> _Side:
    process = subprocess.Popen(
        [sys.executable, str(STAGES), str(calls)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if process.stdout is None:
        raise RuntimeError("stages process without pipes")
    first = process.stdout.readline()
    if not first:
        raise RuntimeError(f"the {name} side of the comparison did not start")
    return _Side(name, process, json.loads(first)["ready"], [])


def compare(revision: str, rounds: int, calls: int) -> dict[str, Any]:
    """Median CPU microseconds per stage for ``revision`` and the working tree, and their
    ratios (now / before), over ``rounds`` alternating rounds of ``calls`` calls."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="edge-before-") as folder:
        before = _start("before", _export(revision, Path(folder)), calls)
        now = _start("now", REPO, calls)
        try:
            for index in range(rounds):
                for side in (before, now) if index % 2 == 0 else (now, before):
                    side.measure()
        finally:
            for side in (before, now):
                side.stop()
    stages = list(now.rounds[0])
    row = {
        stage: {
            "before_us": median([r[stage] for r in before.rounds]),
            "now_us": median([r[stage] for r in now.rounds]),
        }
        for stage in stages
    }
    for values in row.values():
        values["ratio"] = values["now_us"] / values["before_us"]
    return {
        "revision": revision,
        "commit": commit,
        "before_records_config": before.setup,
        "now_records_config": now.setup,
        "rounds": rounds,
        "calls": calls,
        "stages": row,
    }


if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    print(json.dumps(compare(base, rounds=5, calls=200), indent=2))
