"""``edge-agent validate`` records/s: in process, and on a local Dask cluster of 1 and 2
workers (``--workers N``), on one labelled history.

The history is the demo generator's (``fixtures/demo/ward_outcomes.py --holdout DIR N``):
the 200 holdout patients over again with fresh ids, one labelled moment each, as a FHIR
NDJSON export and its outcomes CSV. Each engine runs the real command in its own process
on the demo config; the clock covers the whole command (imports, the pipeline's load, the
cluster's start, reading, scoring, the report). An unmeasured first run fills the store (the
demo pulls its bundle). In every round each engine also runs on a small history, which
gives its fixed cost, so the steady rate is ``(patients - small) / (seconds -
small_seconds)``, and the same for CPU time: the command's and its worker processes'
(children's rusage: run nothing else as a child meanwhile), the figure a neighbour on a
shared machine cannot inflate. The engines' reports must be identical, or the
benchmark fails: a faster engine that answers otherwise is no faster engine.
"""

from __future__ import annotations

import importlib.util
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import median, ratio
from tests.integration.agent_process import demo_root

REPO = Path(__file__).resolve().parents[1]
ENGINES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("in process", ()),
    ("dask, 1 worker", ("--workers", "1")),
    ("dask, 2 workers", ("--workers", "2")),
)


@dataclass(frozen=True)
class Sizes:
    patients: int  # the measured history
    small: int  # the history that measures each engine's fixed cost
    rounds: int  # measured runs per engine, interleaved; the median is reported

    @classmethod
    def for_mode(cls, quick: bool) -> Sizes:
        return cls(30, 10, 1) if quick else cls(4000, 200, 3)


@dataclass(frozen=True)
class Run:
    seconds: float  # wall clock, the whole command
    cpu_seconds: float  # the command's and its workers'
    report: str  # report.json


def history(folder: Path, patients: int) -> tuple[Path, Path]:
    """The demo generator's labelled history of ``patients``: (export, outcomes CSV)."""
    spec = importlib.util.spec_from_file_location(
        "ward_outcomes", REPO / "fixtures" / "demo" / "ward_outcomes.py"
    )
    if spec is None or spec.loader is None:
        raise RuntimeError("fixtures/demo/ward_outcomes.py cannot be loaded")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.write_holdout_history(folder, patients)
    return folder / "history.ndjson", folder / "outcomes.csv"


def validate(config: Path, data: tuple[Path, Path], out: Path, flags: tuple[str, ...]) -> Run:
    """One ``edge-agent validate`` command, timed."""
    export, outcomes = data
    argv = [sys.executable, "-m", "agent.cli", "validate", "-c", str(config)]
    argv += ["--outcomes", str(outcomes), "--out", str(out), *flags, str(export)]
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"validate {' '.join(flags)} failed: {done.stderr[-2000:]}")
    used = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    return Run(seconds, used, (out / "report.json").read_text())


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    """Every engine on the same histories, rounds interleaved; plain JSON values."""
    sizes = Sizes.for_mode(quick)
    config = demo_root(workdir / "validation")
    histories = {
        "small": history(workdir / "history-small", sizes.small),
        "large": history(workdir / "history", sizes.patients),
    }
    validate(config, histories["small"], workdir / "out" / "first", ())
    runs: dict[tuple[str, str], list[Run]] = {}
    for round_ in range(sizes.rounds):
        for i, (name, flags) in enumerate(ENGINES):
            for size, data in histories.items():
                out = workdir / "out" / f"{round_}-{i}-{size}"
                runs.setdefault((name, size), []).append(validate(config, data, out, flags))
    for size in histories:
        if len({r.report for (_, s), rs in runs.items() if s == size for r in rs}) != 1:
            raise RuntimeError("the engines' validation reports differ")
    rows = [
        _row(name, flags, runs[name, "small"], runs[name, "large"], sizes)
        for name, flags in ENGINES
    ]
    alone = rows[0]
    for row in rows:
        for key in ("records_per_s", "steady_records_per_s", "steady_records_per_cpu_s"):
            row[f"{key}_vs_in_process"] = ratio(row[key], alone[key])
    return {"patients": sizes.patients, "small": sizes.small, "rounds": sizes.rounds, "rows": rows}


def _row(
    name: str, flags: tuple[str, ...], small: list[Run], large: list[Run], sizes: Sizes
) -> dict[str, Any]:
    """One engine's medians; *steady* figures count only what the larger history adds
    (None when noise makes the difference not positive, as on a quick run's tiny ones)."""
    seconds = median([r.seconds for r in large])
    cpu = median([r.cpu_seconds for r in large])
    fixed, fixed_cpu = median([r.seconds for r in small]), median([r.cpu_seconds for r in small])
    extra = sizes.patients - sizes.small
    return {
        "engine": name,
        "workers": int(flags[1]) if flags else 0,
        "patients": sizes.patients,
        "seconds": seconds,
        "seconds_rounds": [r.seconds for r in large],
        "cpu_seconds": cpu,
        "records_per_s": sizes.patients / seconds,
        "fixed_seconds": fixed,
        "fixed_cpu_seconds": fixed_cpu,
        "steady_records_per_s": extra / (seconds - fixed) if seconds > fixed else None,
        "steady_records_per_cpu_s": extra / (cpu - fixed_cpu) if cpu > fixed_cpu else None,
    }


def main() -> int:
    import json
    import tempfile

    quick = "--quick" in sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="edge-bench-validate-") as workdir:
        print(json.dumps(run(quick, Path(workdir)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
