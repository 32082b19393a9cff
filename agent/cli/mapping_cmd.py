"""``edge-agent mapping check`` and ``edge-agent mapping explain``: a site's mapping
checked against a model's bundle, and one record's features shown with where each came
from. For operators setting up a site; ``explain`` prints record values to the terminal
that asked for them and nowhere else.

The manifest is read from the bundle directory without verifying its signature: these are
configuration tools, not trust decisions (``bundle verify`` is).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.bundle.manifest import MANIFEST_FILE, BundleManifest
from agent.errors import BundleError, ConfigError, MappingError, UnmappableRecord
from agent.instant import parse_instant
from agent.limits import Limits
from agent.mapping import SiteMapping
from agent.outputs.prediction_json import explanation
from agent.records.config import RecordsConfig
from agent.types import ElementReach, FeatureVector, PatientRecord, RecordFormat

_SUFFIX_FORMATS = {
    ".json": RecordFormat.fhir_json,
    ".ndjson": RecordFormat.fhir_ndjson,
    ".hl7": RecordFormat.hl7v2,
    ".er7": RecordFormat.hl7v2,
    ".txt": RecordFormat.hl7v2,
}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("mapping", help="check a site mapping, explain a record's features")
    group = parser.add_subparsers(dest="mapping_command", metavar="ACTION", required=True)

    check = group.add_parser("check", help="check a mapping against a model's bundle")
    check.add_argument("mapping", type=Path, help="the site mapping YAML")
    check.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    check.add_argument(
        "--sample",
        type=Path,
        nargs="+",
        default=[],
        metavar="RECORDS",
        help="FHIR JSON / NDJSON or HL7 v2 files of the site's own data: report per feature "
        "how often it is found, converted, out of range, outside its window or imputed",
    )
    check.add_argument(
        "--as-of",
        type=_instant,
        default=None,
        help="with --sample: the time the windows end at (default: now)",
    )
    check.set_defaults(func=_check)

    explain = group.add_parser(
        "explain",
        help="show each feature of a record and its source",
        description="Give either --config and --model (the running site's mapping and the "
        "active bundle in its store) or --mapping and --bundle (files being set up).",
    )
    explain.add_argument("input", type=Path, help="FHIR JSON / NDJSON or HL7 v2 file")
    explain.add_argument("--config", type=Path, help="the agent's config file")
    explain.add_argument("--model", help="with --config: the model to explain for")
    explain.add_argument("--mapping", type=Path, help="the site mapping YAML")
    explain.add_argument("--bundle", type=Path, help="bundle directory")
    explain.add_argument(
        "--as-of",
        type=_instant,
        default=None,
        help="ISO 8601 time the look-back windows end at (default: now)",
    )
    explain.add_argument(
        "--format",
        choices=[f.value for f in RecordFormat],
        help="record format (default: from the file suffix)",
    )
    explain.add_argument("--json", action="store_true", help="print JSON instead of a table")
    explain.set_defaults(func=_explain)


def _instant(text: str) -> datetime:
    value = parse_instant(text)
    if value is None:
        raise argparse.ArgumentTypeError("not an ISO 8601 date-time")
    return value


def _manifest(bundle: Path) -> BundleManifest:
    path = bundle / MANIFEST_FILE
    try:
        return BundleManifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except ValidationError as exc:
        raise BundleError(f"{path}: not a valid manifest ({exc.error_count()} errors)") from None


def _check(args: argparse.Namespace) -> int:
    from agent.mapping import load_mapping

    manifest = _manifest(args.bundle)
    try:
        mapping = load_mapping(args.mapping, manifest)
    except MappingError as exc:  # UnitError too
        print(exc)
        return 1
    print(
        f"OK: {args.mapping} binds all {len(mapping.features)} inputs of "
        f"{manifest.name} {manifest.version} for site {mapping.site}"
    )
    if not args.sample:
        return 0
    from agent.mapping.sample_report import SampleReport

    report = SampleReport(mapping.feature_names())
    as_of = args.as_of or datetime.now(UTC)
    for path in args.sample:
        for record in _records(path, None, RecordsConfig(), mapping.reach):
            report.add(mapping.survey(record, as_of))
    print("\n".join(report.lines()))
    return 1 if report.never_found() else 0


def _records(
    path: Path, fmt_name: str | None, config: RecordsConfig, reach: ElementReach | None
) -> list[PatientRecord]:
    """The patient records of one file (format from ``fmt_name`` or the suffix), checked as
    the serving path checks them for ``reach`` (what the mapping's features can read)."""
    from agent.records import parse_records

    fmt = RecordFormat(fmt_name) if fmt_name else _SUFFIX_FORMATS.get(path.suffix)
    if fmt is None:
        raise ConfigError(f"{path}: cannot tell the format from the suffix; give --format")
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_records(body, fmt, limits=Limits(), config=config, reach=reach)


def _site(args: argparse.Namespace) -> tuple[SiteMapping, RecordsConfig]:
    """The mapping to explain with: from the agent config and its store, or from files."""
    from agent.mapping import load_mapping

    if args.config is not None:
        from agent.bundle.trust import TrustStore
        from agent.config import load_config
        from agent.store import BundleStore

        if args.model is None:
            raise ConfigError("--config needs --model")
        config = load_config(args.config)
        model = config.model(args.model)
        if model is None:
            raise ConfigError(f"{args.config}: no model {args.model!r} is configured")
        bundle = BundleStore.from_config(config.store).load(
            model.name, TrustStore(config.trust), config.resolved_limits
        )
        return load_mapping(model.mapping, bundle.manifest), config.records
    if args.mapping is None or args.bundle is None:
        raise ConfigError("give --config and --model, or --mapping and --bundle")
    return load_mapping(args.mapping, _manifest(args.bundle)), RecordsConfig()


def _explain(args: argparse.Namespace) -> int:
    mapping, records_config = _site(args)
    as_of = args.as_of or datetime.now(UTC)
    results: list[tuple[str, FeatureVector | str]] = []
    for record in _records(args.input, args.format, records_config, mapping.reach):
        try:
            results.append((record.label, mapping.extract(record, as_of)))
        except UnmappableRecord as exc:
            results.append((record.label, str(exc)))
    if args.json:
        print(json.dumps([_as_json(label, result, as_of) for label, result in results], indent=2))
    else:
        for label, result in results:
            print(_as_table(label, result, as_of))
    return 1 if any(isinstance(r, str) for _, r in results) else 0


def _as_json(label: str, result: FeatureVector | str, as_of: datetime) -> dict[str, Any]:
    if isinstance(result, str):
        return {"record": label, "as_of": as_of.isoformat(), "error": result}
    return {
        "record": label,
        "as_of": as_of.isoformat(),
        "values": list(result.values),
        "features": explanation(result),
        "warnings": list(result.warnings),
    }


def _as_table(label: str, result: FeatureVector | str, as_of: datetime) -> str:
    head = f"record {label or '(unlabelled)'} as of {as_of.isoformat()}"
    if isinstance(result, str):
        return f"{head}\n  refused: {result}\n"
    rows = [("feature", "value", "unit", "source", "conversion", "flags")]
    for f in result.features:
        flags = [
            name
            for name, on in (
                ("imputed", f.imputed),
                ("out-of-range", f.out_of_range),
                ("unseen-category", f.unseen_category),
            )
            if on
        ]
        rows.append(
            (f.name, str(f.display), f.unit or "", f.source, f.conversion or "", ",".join(flags))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head] + [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines += [f"  warning: {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"
