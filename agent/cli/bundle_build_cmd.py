"""``edge-agent bundle build`` and ``edge-agent bundle predict``: compile a model into an
unsigned bundle, and score a CSV with a bundle's module exactly as the agent would.

``predict`` checks ``model.wasm`` against the manifest's sha256 and size but does not
verify the signature (``bundle verify`` does): it is a data scientist's tool for checking a
build, not a trust decision. The compiler (onnx, scikit-learn) is imported only by
``build``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from pathlib import Path
from typing import Any

from agent.bundle.manifest import MANIFEST_FILE, MODEL_FILE, BundleManifest, OutputKind
from agent.errors import BundleError, DigestMismatch, RecordError
from agent.limits import Limits


def register(group: argparse._SubParsersAction[Any]) -> None:
    build = group.add_parser("build", help="compile an ONNX model into an unsigned bundle")
    build.add_argument("model", type=Path, help="the .onnx file")
    build.add_argument("--reference", type=Path, required=True,
                       help="training reference CSV; its header names the features in order")
    build.add_argument("--name", required=True, help="model name (lowercase, digits, . _ -)")
    build.add_argument("--version", required=True, help="semantic version X.Y.Z")
    build.add_argument("--schema", type=Path, help="YAML with units, ranges and levels")
    build.add_argument("--creator", help="who built it (default: the current user)")
    build.add_argument("--description", default="", help="one line about the model")
    build.add_argument("-o", "--out", type=Path, required=True, help="bundle directory to write")
    build.set_defaults(func=_build)

    predict = group.add_parser("predict", help="score a features CSV with a bundle's module")
    predict.add_argument("bundle", type=Path, help="bundle directory")
    predict.add_argument("features", type=Path, help="CSV whose header names the features")
    predict.add_argument("-o", "--out", type=Path, help="output CSV (default: standard output)")
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
    )
    print(f"built {args.name} {args.version} -> {out} (unsigned)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from agent.runtime.model import WasmModel

    limits = Limits()
    manifest, wasm = read_bundle(args.bundle, limits)
    rows = read_features(args.features, manifest)
    model = WasmModel.load(wasm, limits=limits)
    predictions = model.predict(rows)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([o.name for o in manifest.outputs])
    for values in predictions:
        writer.writerow([_format(spec.kind, spec.classes, v)
                         for spec, v in zip(manifest.outputs, values, strict=True)])
    if args.out is None:
        sys.stdout.write(text.getvalue())
    else:
        args.out.write_text(text.getvalue(), encoding="utf-8")
    return 0


def read_bundle(directory: Path, limits: Limits) -> tuple[BundleManifest, bytes]:
    """The manifest and a module whose sha256 and size match it (``DigestMismatch``)."""
    manifest_path = directory / MANIFEST_FILE
    try:
        if manifest_path.stat().st_size > limits.manifest_max:
            raise BundleError(f"{MANIFEST_FILE} is larger than limits.manifest_max")
        manifest = BundleManifest.model_validate_json(manifest_path.read_bytes())
        wasm = (directory / MODEL_FILE).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the bundle in {directory}") from exc
    except ValueError as exc:
        raise BundleError(f"{MANIFEST_FILE} is not a valid manifest") from exc
    entry = manifest.files[MODEL_FILE]
    if len(wasm) != entry.size or hashlib.sha256(wasm).hexdigest() != entry.sha256:
        raise DigestMismatch(f"{MODEL_FILE} does not match the manifest's sha256/size")
    return manifest, wasm


def read_features(path: Path, manifest: BundleManifest) -> list[list[float]]:
    """Rows in manifest input order; categorical cells are level names. Extra columns are
    ignored; a missing column, an empty cell or an unknown level is an error naming the
    line and feature."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        absent = [f.name for f in manifest.inputs if f.name not in header]
        if absent:
            raise RecordError(f"features CSV lacks columns: {', '.join(absent)}")
        rows = []
        for line, record in enumerate(reader, start=2):
            row = []
            for feature in manifest.inputs:
                cell = (record.get(feature.name) or "").strip()
                try:
                    row.append(float(feature.levels.index(cell)) if feature.levels else float(cell))
                except ValueError:
                    raise RecordError(
                        f"features CSV line {line}: {feature.name!r} is missing or invalid"
                    ) from None
            rows.append(row)
    return rows


def _format(kind: OutputKind, classes: list[str], value: float) -> str:
    if kind is OutputKind.label and classes and 0 <= value < len(classes):
        return classes[int(value)]
    return f"{value:.9g}"
