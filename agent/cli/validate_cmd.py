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
    parser.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from agent.cli.score_cmd import serving_pipeline
    from agent.config import load_config
    from agent.errors import OutcomesError
    from agent.validation.derived_labels import Labeler, describe, record_labeler
    from agent.validation.history import patient_histories
    from agent.validation.outcomes_csv import read_outcomes
    from agent.validation.report_files import write_report
    from agent.validation.run import ModelUnderTest, validate

    config = load_config(args.config)
    outcomes = read_outcomes(args.outcomes)
    pipeline, model = serving_pipeline(config, args.model, args.records)
    served = pipeline.served(model)
    under_test = ModelUnderTest(
        name=served.name,
        version=served.version,
        bundle_digest=served.digest,
        risk_output=served.risk_output,
        thresholds=(("warning", served.cards.warning), ("critical", served.cards.critical)),
        training_metrics=served.manifest.provenance.metrics,
    )
    labeler: Labeler | None = None
    label_source = "the outcomes file"
    if not outcomes.labelled:
        outcome = served.mapping.outcome
        if outcome is None:
            raise OutcomesError(
                "the outcomes file has no label column, and the site mapping no outcome "
                "section to read labels from the records"
            )
        labeler = record_labeler(outcome, config.resolved_limits, config.records)
        label_source = describe(outcome)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edge-agent-validate-", dir=args.out) as scratch:
        histories = patient_histories(
            args.records, config.resolved_limits, config.drop_folder.document_max, Path(scratch)
        )
        report = validate(pipeline, under_test, outcomes, histories, labeler, label_source)
    written = write_report(report, args.out)
    counts = report["counts"]
    refused = sum(counts["refused"].values())
    print(
        f"{counts['labelled']} labelled, {counts['scored']} scored, {refused} refused"
        f" -> {', '.join(str(p) for p in written)}",
        file=sys.stderr,
    )
    return 0
