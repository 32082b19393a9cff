"""``edge-agent validate --config FILE --outcomes CSV --out DIR RECORDS...``: does this model
work here? Scores the site's labelled history through the same pipeline, bundle and mapping
that serve, and writes ``DIR/report.json`` and ``DIR/report.html`` (docs/validation.md).

Exit code: 0 when the report was written, 2 for a usage, configuration or outcomes-file
error (from ``agent.cli.main``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "validate", help="validate a model on this site's labelled history (report JSON + HTML)"
    )
    parser.add_argument(
        "--config", "-c", type=Path, required=True, metavar="FILE", help="agent config YAML"
    )
    parser.add_argument(
        "--model", "-m", metavar="NAME", help="model to validate (default: drop_folder.model)"
    )
    parser.add_argument(
        "--outcomes",
        type=Path,
        required=True,
        metavar="CSV",
        help="moments to score: columns patient, as_of, label (0/1; without it the site "
        "mapping's outcome section reads it from the records), optional group columns",
    )
    parser.add_argument(
        "--out", "-o", type=Path, required=True, metavar="DIR", help="where the report goes"
    )
    parser.add_argument(
        "records",
        nargs="+",
        type=Path,
        metavar="RECORDS",
        help="the site's records: FHIR NDJSON exports or FHIR JSON (Bundles)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="score on this Dask scheduler's workers (they must see the config and the store "
        "at the same paths); needs the dask extra",
    )
    where.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="score on a local Dask cluster of N worker processes; needs the dask extra",
    )
    parser.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from agent.cli.score_cmd import serving_pipeline
    from agent.config import load_config
    from agent.validation.history import patient_histories
    from agent.validation.outcomes_csv import read_outcomes
    from agent.validation.report_files import write_report
    from agent.validation.run import local_runner, validate
    from agent.validation.setup import validation_setup

    config = load_config(args.config)
    outcomes = read_outcomes(args.outcomes)
    pipeline, model = serving_pipeline(config, args.model, args.records)  # pulls if needed
    setup = validation_setup(args.config, model, outcomes.labelled, pipeline)
    client = None
    if args.dask is not None or args.workers is not None:
        from agent.validation.distributed import connect, dask_runner

        client = connect(args.dask, args.workers)
        run_jobs = dask_runner(client, args.config.resolve(), model, outcomes.labelled)
    else:
        run_jobs = local_runner(setup.pipeline, setup.model, setup.labeler)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".edge-agent-validate-", dir=args.out) as scratch:
            histories = patient_histories(
                args.records,
                config.resolved_limits,
                config.drop_folder.document_max,
                Path(scratch),
            )
            report = validate(run_jobs, setup.model, outcomes, histories, setup.label_source)
    finally:
        if client is not None:
            client.close()
    written = write_report(report, args.out)
    counts = report["counts"]
    refused = sum(counts["refused"].values())
    print(
        f"{counts['labelled']} labelled, {counts['scored']} scored, {refused} refused"
        f" -> {', '.join(str(p) for p in written)}",
        file=sys.stderr,
    )
    return 0
