"""``edge-agent score --config FILE [--model NAME] [-o OUTDIR] INPUT...``: batch scoring of
files from the command line, through the same batch engine as the drop folder.

Each input gets the drop folder's outputs in OUTDIR (``<name>.results.ndjson``,
``.results.csv``, ``.riskassessment.ndjson`` as configured, and ``<name>.report.json``),
replacing files of the same name (a second input of the same name gets ``<stem>.2.<ext>``
outputs). Inputs are read, never moved. The console gets a line per file: records, how
many were scored and failed, and the failures' reasons with their counts (a feature-CSV row
is a record, refused with the reasons a record gets). Exit code: 0 when every
record of every file was scored, 1 when a record or a whole file failed, 2 for a usage or
configuration error (from ``agent.cli.main``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.batch.config import OutputKind
from agent.batch.engine import (
    BatchEngine,
    BatchSettings,
    Progress,
    numbered_stem,
    output_name,
)
from agent.batch.items import UnreadableFile
from agent.dataplane import DataPlane
from agent.errors import ConfigError
from agent.instant import parse_instant
from agent.types import IntakePath

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.pipeline import ScoringPipeline


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("score", help="score files (NDJSON, FHIR JSON, HL7 v2, feature CSV)")
    parser.add_argument(
        "--config", "-c", type=Path, required=True, metavar="FILE", help="agent config YAML"
    )
    parser.add_argument(
        "--model", "-m", metavar="NAME", help="model to score with (default: drop_folder.model)"
    )
    parser.add_argument(
        "--output-dir",
        "-o",
        type=Path,
        default=Path("."),
        metavar="OUTDIR",
        help="where results go (default: .)",
    )
    parser.add_argument(
        "--outputs",
        type=_outputs,
        metavar="KINDS",
        help="comma-separated: ndjson,csv,fhir (default: drop_folder.outputs)",
    )
    parser.add_argument(
        "--as-of",
        type=_moment,
        metavar="TIME",
        help="score as at this ISO 8601 time (look-back windows end here; default: now)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="files to score: FHIR NDJSON, FHIR JSON, HL7 v2, feature CSV (docs/drop-folder.md)",
    )
    parser.set_defaults(func=_score)


def _outputs(text: str) -> tuple[OutputKind, ...]:
    try:
        return tuple(OutputKind(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("outputs are ndjson, csv and fhir") from None


def _moment(text: str) -> datetime:
    moment = parse_instant(text)
    if moment is None:
        raise argparse.ArgumentTypeError("--as-of takes an ISO 8601 time")
    return moment


def _score(args: argparse.Namespace) -> int:
    from agent.config import load_config

    config = load_config(args.config)
    pipeline, model = serving_pipeline(config, args.model, args.inputs)
    settings = BatchSettings(
        model=model,
        intake=IntakePath.cli,
        outputs=frozenset(args.outputs or config.drop_folder.outputs),
        limits=config.resolved_limits,
        caller="cli",
        checkpoint_records=config.drop_folder.checkpoint_records,
        checkpoint_seconds=config.drop_folder.checkpoint_seconds,
        document_max=config.drop_folder.document_max,
        as_of=args.as_of,
    )
    return score_files(pipeline, settings, args.inputs, args.output_dir, sys.stderr, args.quiet)


def serving_pipeline(
    config: AgentConfig, model: str | None, inputs: Sequence[Path]
) -> tuple[ScoringPipeline, str]:
    """The pipeline a one-shot command scores with, and the model it scores: ``model``, else
    the drop folder's, else the only one configured. ConfigError when no model is named or
    an input file is missing; the store is pulled once when nothing is installed yet."""
    from agent.pipeline import ScoringPipeline

    model = model or config.drop_folder.model
    if model is None and len(config.models) == 1:
        model = config.models[0].name
    if model is None:
        raise ConfigError("name the model to score with: --model NAME")
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise ConfigError(f"no such input file: {', '.join(missing)}")
    pipeline = ScoringPipeline.from_config(config)
    if not pipeline.ready:
        # nothing installed yet (the agent never ran here): pull once, as `serve` would
        from agent.registry.updater import build_updater

        build_updater(config, pipeline).pull_once()
    pipeline.served(model)  # fail fast when the model is unknown or not installed
    return pipeline, model


def score_files(
    plane: DataPlane,
    settings: BatchSettings,
    inputs: Sequence[Path],
    outdir: Path,
    console: TextIO,
    quiet: bool = False,
) -> int:
    """Score each input into ``outdir``; a summary line per file on ``console``. Returns
    the exit code (0 all scored, 1 something failed)."""
    outdir.mkdir(parents=True, exist_ok=True)
    engine = BatchEngine(plane, settings)
    bar = ProgressBar(console, enabled=not quiet and console.isatty())
    code = 0
    seen: Counter[str] = Counter()
    for index, source in enumerate(inputs, start=1):
        seen[source.name] += 1  # a/x.csv and b/x.csv: the second one's outputs are x.2.csv.*
        stem = numbered_stem(source.name, seen[source.name])
        with tempfile.TemporaryDirectory(prefix=".edge-agent-score-", dir=outdir) as work:
            # the file named, through any symlink the user chose (the engine follows none)
            job = engine.begin(Path(work), source.resolve(), source.name, stem, f"cli-{index}")
            try:
                engine.run(job, progress=bar.update)
            except (UnreadableFile, OSError) as exc:
                bar.clear()
                reason = exc.reason if isinstance(exc, UnreadableFile) else "io_error"
                detail = str(exc) if isinstance(exc, UnreadableFile) else "read error"
                print(f"{source}: not scored ({reason}): {detail}", file=console)
                code = 1
                continue
            summary = engine.publish(job, outdir)
        bar.clear()
        report = outdir / output_name(stem, None)
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(summary.reasons.items()))
        print(
            f"{source}: {summary.records} records, {summary.ok} ok, {summary.failed} failed"
            f"{f' ({reasons})' if reasons else ''} -> {report}",
            file=console,
        )
        if summary.failed:
            code = 1
    return code


class ProgressBar:
    """A one-line text progress bar on a terminal (bytes read of the current file)."""

    WIDTH = 30  # characters of bar
    INTERVAL = 0.1  # seconds between redraws

    def __init__(self, console: TextIO, enabled: bool) -> None:
        self._console = console
        self._enabled = enabled
        self._drawn_at = 0.0
        self._drawn = False

    def update(self, progress: Progress) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._drawn_at < self.INTERVAL:
            return
        self._drawn_at = now
        fraction = progress.bytes_read / progress.bytes_total if progress.bytes_total else 1.0
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"\r{progress.name[:30]} [{bar}] {fraction:4.0%} {progress.records} records"
        self._console.write(line)
        self._console.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self._console.write("\r\x1b[K")
            self._console.flush()
            self._drawn = False
