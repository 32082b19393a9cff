"""``edge-agent bundle build`` and ``edge-agent bundle predict``: compile a model into an
unsigned bundle, and score a CSV with a bundle's module exactly as the agent would.

``predict`` checks ``model.wasm`` against the manifest's sha256 and size but does not
verify the signature (``bundle verify`` does): it is a data scientist's tool for checking a
build, not a trust decision. It reads cells as ``agent.load(...).predict`` does (empty,
``NA``, ``NaN`` missing; level names for categorical features; see ``agent.local``), CSV or
Parquet (the ``[parquet]`` extra), and with ``--contributions`` adds each feature's
contribution (docs/explain.md). The compiler (onnx, scikit-learn) is imported only by
``build``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(group: argparse._SubParsersAction[Any]) -> None:
    build = group.add_parser("build", help="compile an ONNX model into an unsigned bundle")
    build.add_argument("model", type=Path, help="the .onnx file")
    build.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="training reference CSV; its header names the features in order",
    )
    build.add_argument("--name", required=True, help="model name (lowercase, digits, . _ -)")
    build.add_argument("--version", required=True, help="semantic version X.Y.Z")
    build.add_argument("--schema", type=Path, help="YAML with units, ranges and levels")
    build.add_argument("--creator", help="who built it (default: the current user)")
    build.add_argument("--description", default="", help="one line about the model")
    build.add_argument(
        "--card",
        type=Path,
        help="model card YAML: intended_use, intended_users, outcome, training_population, "
        "training_period, metrics, limitations, contraindications, contact, history",
    )
    build.add_argument("-o", "--out", type=Path, required=True, help="bundle directory to write")
    build.add_argument(
        "--outputs",
        action="append",
        metavar="KIND[:classes=A,B][;names=N,..]",
        help="what a graph output is, once per output in graph order: probability (one "
        "column per class), class (one column, a class index) or score; e.g. "
        "--outputs probability:classes=no,yes (default: inferred, hand-made graphs give "
        "scores)",
    )
    build.add_argument(
        "--metrics",
        type=Path,
        metavar="FILE",
        help='JSON object of the training and validation figures (e.g. {"holdout_auroc": '
        "0.84}), recorded in the manifest: what a site's validation and live performance are "
        "compared with",
    )
    build.set_defaults(func=_build)

    predict = group.add_parser("predict", help="score a features CSV with a bundle's module")
    predict.add_argument("bundle", type=Path, help="bundle directory")
    predict.add_argument(
        "features", type=Path, help="CSV whose header names the features, or a .parquet file"
    )
    predict.add_argument(
        "-o", "--out", type=Path, help="output CSV or .parquet (default: CSV on standard output)"
    )
    predict.add_argument(
        "--contributions",
        action="store_true",
        help="add contribution_<feature> and contribution_base columns (docs/explain.md)",
    )
    predict.set_defaults(func=_predict)


def _build(args: argparse.Namespace) -> int:
    from agent.compiler.build import build

    out = build(
        args.model,
        reference=args.reference,
        name=args.name,
        version=args.version,
        out=args.out,
        schema=args.schema,
        creator=args.creator,
        description=args.description,
        metrics=_metrics(args.metrics) if args.metrics is not None else None,
        outputs=args.outputs,
        card=args.card,
    )
    print(f"built {args.name} {args.version} -> {out} (unsigned)")
    return 0


def _metrics(path: Path) -> dict[str, float]:
    """The figures in ``path``: a JSON object of names to numbers (ConfigError otherwise)."""
    import json
    import math

    from agent.errors import ConfigError

    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(document, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in document.values()
    ):
        raise ConfigError(f"{path}: must be a JSON object of names to finite numbers")
    return {str(k): float(v) for k, v in document.items()}


def _predict(args: argparse.Namespace) -> int:
    from agent.local import load

    model = load(args.bundle)
    text = model.score_file(args.features, args.out, contributions=args.contributions)
    sys.stdout.write(text)
    return 0
