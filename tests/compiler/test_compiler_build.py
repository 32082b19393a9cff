"""build(): bundles from scikit-learn and ONNX, manifest contents, reference statistics,
the committed demo bundle, and the ``bundle build`` / ``bundle predict`` commands."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor

import agent
import agent.bundle
from agent.bundle.manifest import BundleManifest, OutputKind
from agent.cli import bundle_build_cmd
from agent.compiler.build import build
from agent.compiler.reference import numeric_reference
from agent.errors import CompileError, DigestMismatch
from agent.limits import Limits
from agent.runtime.model import WasmModel
from tests.compiler.compiler_helpers import label_indices, run_compiled, run_onnxruntime

DEMO = Path(__file__).resolve().parents[2] / "fixtures" / "demo"
SCHEMA = {
    "features": {
        "temp": {"unit": "Cel", "min": 30, "max": 43},
        "sex": {"levels": ["female", "male"]},
    }
}


def _dataset(tmp_path: Path, rows: int = 300) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    temp = rng.normal(37, 0.8, rows).round(1)
    age = rng.integers(18, 95, rows).astype(float)
    sex = rng.integers(0, 2, rows).astype(float)
    y = ((temp > 37.5) ^ (age > 70)).astype(int)
    path = tmp_path / "reference.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["temp", "age", "sex"])
        for i in range(rows):
            level = ["female", "male"][int(sex[i])]
            writer.writerow(["" if i % 10 == 0 else temp[i], age[i], level])
    return path, np.column_stack([temp, age, sex]), y


def _manifest(out: Path) -> BundleManifest:
    return BundleManifest.model_validate_json((out / "manifest.json").read_bytes())


def test_build_from_sklearn_writes_a_complete_unsigned_bundle(tmp_path: Path) -> None:
    reference, x, y = _dataset(tmp_path)
    model = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0)
    model.fit(x.astype(np.float32), y)
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.sig").write_bytes(b"stale")
    result = build(
        model,
        reference=reference,
        name="fever",
        version="1.2.3",
        out=out,
        schema=SCHEMA,
        creator="tester",
        metrics={"auroc": 0.9},
    )
    assert result == out
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.wasm"]
    manifest = _manifest(out)
    assert (out / "manifest.json").read_bytes() == manifest.canonical_bytes()
    wasm = (out / "model.wasm").read_bytes()
    assert manifest.files["model.wasm"].sha256 == hashlib.sha256(wasm).hexdigest()
    assert manifest.files["model.wasm"].size == len(wasm)
    assert manifest.abi_version == 1 and manifest.name == "fever" and manifest.version == "1.2.3"
    assert [f.name for f in manifest.inputs] == ["temp", "age", "sex"]
    assert manifest.inputs[0].unit == "Cel" and manifest.inputs[2].levels == ["female", "male"]
    assert [(o.name, o.kind) for o in manifest.outputs] == [
        ("label", OutputKind.label),
        ("probability_0", OutputKind.probability),
        ("probability_1", OutputKind.probability),
    ]
    assert manifest.outputs[0].classes == ["0", "1"] and manifest.outputs[2].class_label == "1"
    provenance = manifest.provenance
    assert provenance.source == "sklearn" and provenance.creator == "tester"
    assert provenance.metrics == {"auroc": 0.9}
    assert provenance.training_data_sha256 == hashlib.sha256(reference.read_bytes()).hexdigest()
    stats = manifest.reference
    assert stats.rows == 300
    assert stats.features["temp"].missing_rate == pytest.approx(0.1)
    assert stats.features["temp"].count == 270
    assert set(stats.features["sex"].category_frequencies) == {"female", "male"}
    assert sum(stats.features["sex"].category_frequencies.values()) == pytest.approx(1.0)
    histogram = stats.features["age"].histogram
    assert histogram is not None and sum(histogram.fractions) == pytest.approx(1.0)
    assert set(stats.outputs) == {"label", "probability_0", "probability_1"}
    assert stats.outputs["probability_1"].mean == pytest.approx(
        float(model.predict_proba(_imputed(x, stats.features["temp"].median))[:, 1].mean()),
        abs=1e-5,
    )


def _imputed(x: np.ndarray, median: float | None) -> np.ndarray:
    filled = x.astype(np.float32).copy()
    filled[::10, 0] = median
    return filled


def test_build_from_onnx_path_and_the_lazy_wrappers(tmp_path: Path) -> None:
    reference, x, _ = _dataset(tmp_path)
    model = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0)
    model.fit(x.astype(np.float32), x[:, 1])
    from skl2onnx import to_onnx

    path = tmp_path / "model.onnx"
    path.write_bytes(to_onnx(model, x[:1].astype(np.float32)).SerializeToString())
    for entry, out in ((agent.build, tmp_path / "a"), (agent.bundle.build, tmp_path / "b")):
        entry(path, reference=reference, name="age-model", version="0.1.0", out=out, schema=SCHEMA)
        manifest = _manifest(out)
        assert manifest.provenance.source == "onnx"
        assert [(o.name, o.kind) for o in manifest.outputs] == [("value", OutputKind.score)]


def test_build_refuses_mismatched_or_bad_reference_data(tmp_path: Path) -> None:
    reference, x, y = _dataset(tmp_path)
    model = GradientBoostingClassifier(n_estimators=2, max_depth=2).fit(x[:, :2], y)
    with pytest.raises(CompileError, match="reads 2 features"):
        build(
            model.fit(x[:, :2], y),
            reference=reference,
            name="m",
            version="1.0.0",
            out=tmp_path / "o",
            schema={"features": {"sex": {"levels": ["female", "male"]}}},
        )
    with pytest.raises(CompileError, match=r"line 2: 'sex' holds a value not among its levels"):
        build(
            model,
            reference=reference,
            name="m",
            version="1.0.0",
            out=tmp_path / "o",
            schema={"features": {"sex": {"levels": ["f", "m"]}}},
        )
    with pytest.raises(CompileError, match="missing from the reference"):
        build(
            model,
            reference=reference,
            name="m",
            version="1.0.0",
            out=tmp_path / "o",
            schema={"features": {"weight": {"unit": "kg"}}},
        )


def test_numeric_reference_histogram_convention() -> None:
    values = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10, np.nan, np.nan])
    ref = numeric_reference(values)
    assert ref.count == 10 and ref.missing_rate == pytest.approx(2 / 12)
    assert ref.histogram is not None
    edges, fractions = ref.histogram.edges, ref.histogram.fractions
    assert len(fractions) == len(edges) + 1 and sum(fractions) == pytest.approx(1.0)
    assert fractions[0] == pytest.approx(0.1)  # only 1.0 lies below the first decile (1.9)
    constant = numeric_reference(np.array([5.0, 5.0, 5.0]))
    assert constant.histogram is not None and constant.histogram.edges == [5.0]
    assert constant.histogram.fractions == [0.0, 1.0]


def _demo_holdout() -> tuple[np.ndarray, np.ndarray]:
    manifest = _manifest(DEMO / "build" / "deterioration")
    with (DEMO / "holdout.csv").open(newline="") as handle:
        records = list(csv.DictReader(handle))
    rows = [
        [
            float(f.levels.index(r[f.name])) if f.levels else float(r[f.name])
            for f in manifest.inputs
        ]
        for r in records
    ]
    return np.asarray(rows), np.asarray([int(r["label"]) for r in records])


def test_demo_bundle_matches_onnxruntime_on_the_holdout() -> None:
    model = onnx.load(str(DEMO / "model.onnx"))
    x, _ = _demo_holdout()
    assert x.shape == (200, 9)
    ours, classes = run_compiled(model, x)
    label, probabilities = run_onnxruntime(model, x)
    assert (ours[:, 0] != label_indices(label, classes)).sum() == 0
    assert np.abs(ours[:, 1:] - probabilities).max() <= 1e-5


def test_committed_demo_bundle_matches_its_manifest_and_onnxruntime() -> None:
    """The committed (signed) module itself, not a fresh compile: compiler improvements
    must not silently break the published demo, and re-signing is the publisher's step."""
    bundle = DEMO / "build" / "deterioration"
    manifest = _manifest(bundle)
    wasm = (bundle / "model.wasm").read_bytes()
    assert manifest.files["model.wasm"].sha256 == hashlib.sha256(wasm).hexdigest()
    assert manifest.name == "deterioration" and manifest.version == "1.0.0"
    assert manifest.reference.features["wbc"].missing_rate > 0.05
    x, _ = _demo_holdout()
    ours = np.asarray(WasmModel.load(wasm, limits=Limits()).predict(x.tolist()))
    label, probabilities = run_onnxruntime(onnx.load(str(DEMO / "model.onnx")), x)
    assert (ours[:, 0] != label).sum() == 0
    assert np.abs(ours[:, 1:] - probabilities).max() <= 1e-5
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 1_000_000


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    bundle_build_cmd.register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_cli_build_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    assert (
        _cli(
            [
                "build",
                str(DEMO / "model.onnx"),
                "--reference",
                str(DEMO / "reference.csv"),
                "--schema",
                str(DEMO / "schema.yaml"),
                "--name",
                "deterioration",
                "--version",
                "1.0.1",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "unsigned" in capsys.readouterr().out
    assert (
        _cli(["predict", str(out), str(DEMO / "holdout.csv"), "-o", str(tmp_path / "p.csv")]) == 0
    )
    with (tmp_path / "p.csv").open(newline="") as handle:
        predictions = list(csv.DictReader(handle))
    x, _ = _demo_holdout()
    _, probabilities = run_onnxruntime(onnx.load(str(DEMO / "model.onnx")), x)
    assert len(predictions) == 200 and set(predictions[0]) == {
        "label",
        "probability_0",
        "probability_1",
    }
    got = np.array([float(p["probability_1"]) for p in predictions])
    assert np.abs(got - probabilities[:, 1]).max() <= 1e-5
    assert {p["label"] for p in predictions} <= {"0", "1"}
    assert _cli(["predict", str(out), str(DEMO / "holdout.csv")]) == 0
    assert capsys.readouterr().out.startswith("label,probability_0,probability_1\n")


def test_the_edge_agent_entry_point_runs_build_and_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    out = tmp_path / "bundle"
    assert (
        main(
            [
                "bundle",
                "build",
                str(DEMO / "model.onnx"),
                "--reference",
                str(DEMO / "reference.csv"),
                "--name",
                "deterioration",
                "--version",
                "2.0.0",
                "--schema",
                str(DEMO / "schema.yaml"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    # The reference has empty wbc cells: missing, which the demo's trees route.
    assert main(["bundle", "predict", str(out), str(DEMO / "reference.csv")]) == 0
    capsys.readouterr()
    broken = tmp_path / "broken.csv"
    lines = (DEMO / "reference.csv").read_text().splitlines()
    broken.write_text("\n".join([lines[0], lines[1].replace("male", "unknown")]) + "\n")
    assert main(["bundle", "predict", str(out), str(broken)]) == 2
    assert capsys.readouterr().err == (
        "edge-agent: error: features CSV line 2: 'sex' is not one of its levels\n"
    )


def test_cli_predict_refuses_a_swapped_module(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    source = DEMO / "build" / "deterioration"
    (bundle / "manifest.json").write_bytes((source / "manifest.json").read_bytes())
    wasm = bytearray((source / "model.wasm").read_bytes())
    wasm[-1] ^= 1
    (bundle / "model.wasm").write_bytes(bytes(wasm))
    with pytest.raises(DigestMismatch):
        _cli(["predict", str(bundle), str(DEMO / "holdout.csv")])
    manifest = json.loads((source / "manifest.json").read_bytes())
    assert manifest["files"]["model.wasm"]["size"] == len(wasm)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reference", "absent.csv"], "cannot read the reference CSV 'absent.csv' as UTF-8"),
        (["--schema", "absent.yaml"], "cannot read the schema 'absent.yaml'"),
        (["--name", "Bad Name"], "name 'Bad Name': model name must be lowercase"),
    ],
)
def test_cli_build_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from agent.cli import main

    options = {"--reference": str(DEMO / "reference.csv"), "--name": "m", "--version": "1.0.0"}
    for key, value in zip(argv[::2], argv[1::2], strict=True):
        options[key] = str(tmp_path / value) if value.endswith((".csv", ".yaml")) else value
    command = ["bundle", "build", str(DEMO / "model.onnx"), "-o", str(tmp_path / "out")]
    for key, value in options.items():
        command += [key, value]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edge-agent: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_build_records_the_publishers_metrics_in_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    figures = tmp_path / "metrics.json"
    figures.write_text(json.dumps({"holdout_auroc": 0.84, "holdout_brier": 0.07}))
    common = [
        "bundle",
        "build",
        str(DEMO / "model.onnx"),
        "--reference",
        str(DEMO / "reference.csv"),
        "--schema",
        str(DEMO / "schema.yaml"),
        "--name",
        "m",
        "--version",
        "1.0.0",
    ]
    assert main([*common, "-o", str(tmp_path / "out"), "--metrics", str(figures)]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["provenance"]["metrics"] == {"holdout_auroc": 0.84, "holdout_brier": 0.07}
    figures.write_text(json.dumps({"holdout_auroc": "high"}))
    assert main([*common, "-o", str(tmp_path / "bad"), "--metrics", str(figures)]) == 2
    assert "finite numbers" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
