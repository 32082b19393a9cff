"""Run every fuzz target (or those named) for a bounded time each and summarize.

    .venv/bin/python fuzz/run.py --seconds 60            # all targets, 60 s each
    .venv/bin/python fuzz/run.py --seconds 300 hl7 mapping

Each target runs ``harness.py`` in its own process (libFuzzer through atheris) on a corpus
folder under ``--workdir`` seeded from fixtures/, so corpora grow across runs. A crash
stops that target's run; its input is saved as ``<workdir>/crashes/<target>-crash-*``
(replay it with ``fuzz/replay.py``) and the exit status is 1. Exit 0: no crash.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

from targets import TARGETS

HERE = Path(__file__).resolve().parent
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_COVERAGE = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)")


def _seed(corpus: Path, seeds: list[bytes]) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (corpus / f"seed-{hashlib.sha256(seed).hexdigest()[:16]}").write_bytes(seed)


def run_target(name: str, seconds: int, workdir: Path, max_len: int) -> dict[str, object]:
    corpus = workdir / "corpus" / name
    crashes = workdir / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    _seed(corpus, TARGETS[name].seeds())
    before = set(crashes.iterdir())
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "harness.py"),
            name,
            f"-max_total_time={seconds}",
            "-timeout=10",  # one input running longer than this is a hang: reported
            "-rss_limit_mb=2048",
            f"-max_len={max_len}",
            f"-artifact_prefix={crashes}/{name}-",
            "-print_final_stats=1",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 300,
        check=False,
    )
    output = result.stdout + result.stderr
    done = _DONE.search(output)
    runs = int(done[1]) if done else _stat(output, "stat::number_of_executed_units")
    coverage = _COVERAGE.findall(output)
    new_crashes = sorted(set(crashes.iterdir()) - before)
    summary: dict[str, object] = {
        "target": name,
        "seconds": round(time.monotonic() - started),
        "executions": runs,
        "coverage": int(coverage[-1][0]) if coverage else 0,
        "corpus": len(list(corpus.iterdir())),
        "crashes": [p.name for p in new_crashes],
    }
    if new_crashes or result.returncode != 0:
        tail = [line for line in output.splitlines() if not line.startswith("INFO: Instrumenting")]
        summary["log_tail"] = "\n".join(tail[-40:])
    return summary


def _stat(output: str, key: str) -> int:
    match = re.search(rf"{re.escape(key)}:\s+(\d+)", output)
    return int(match[1]) if match else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--seconds", type=int, default=60, help="time per target")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / ".work",
        help="corpora and crash files (default fuzz/.work)",
    )
    parser.add_argument(
        "--max-len", type=int, default=65536, help="largest input libFuzzer generates, bytes"
    )
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    crashed = False
    for name in args.targets or list(TARGETS):
        summary = run_target(name, args.seconds, args.workdir, args.max_len)
        crashed = crashed or bool(summary["crashes"]) or "log_tail" in summary
        print(
            f"{name:12} {summary['seconds']:>5}s {summary['executions']:>9} execs "
            f"cov {summary['coverage']:>5} corpus {summary['corpus']:>5} "
            f"crashes {len(summary['crashes'])}",  # type: ignore[arg-type]
            flush=True,
        )
        if "log_tail" in summary:
            print(summary["log_tail"], flush=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
