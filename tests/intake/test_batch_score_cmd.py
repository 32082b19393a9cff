"""``edge-agent score``: the real pipeline (signed demo bundle, wasm model, site mapping)
scoring real fixture files from the command line, and the command's own behaviour."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agent.batch.config import OutputKind
from agent.batch.engine import BatchSettings, Progress
from agent.cli import main
from agent.cli.score_cmd import ProgressBar, score_files
from agent.limits import Limits
from agent.types import IntakePath
from tests.intake.dropfolder_demo import demo_config
from tests.intake.dropfolder_support import RecordScorer

REPO = Path(__file__).resolve().parents[2]
FEATURES = "heart_rate,respiratory_rate,body_temperature,systolic_bp,spo2,wbc,creatinine,age,sex"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    drop_folder = {"model": "deterioration", "outputs": ["ndjson", "csv", "fhir"]}
    return demo_config(tmp_path_factory.mktemp("demo"), drop_folder)


def test_score_fixture_files_with_the_real_pipeline(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text(
        f"{FEATURES},label\n78,22,38,101,88,7.6,104,74,0,a\n111,19,37.6,137,88,12.1,158,68,1,b\n"
    )
    bundle = REPO / "fixtures" / "fhir" / "demo-patient-bundle.json"
    out = tmp_path / "out"
    argv = ["score", "-c", str(demo), "-o", str(out), "--as-of", "2026-03-15T12:00:00Z"]
    assert main([*argv, str(bundle), str(rows)]) == 0

    result = json.loads((out / "demo-patient-bundle.json.results.ndjson").read_text())
    assert result["status"] == "ok" and result["model"] == "deterioration"
    assert result["version"] == "1.0.0" and result["position"] == 1
    assert result["outputs"]["probability_0"] + result["outputs"]["probability_1"] == pytest.approx(
        1.0
    )
    risk = json.loads((out / "demo-patient-bundle.json.riskassessment.ndjson").read_text())
    assert risk["resourceType"] == "RiskAssessment"
    assert risk["prediction"][0]["outcome"]["text"] == "probability_1"  # the config's risk_output
    vectors = [json.loads(x) for x in (out / "rows.csv.results.ndjson").read_text().splitlines()]
    assert [v["label"] for v in vectors] == ["a", "b"] and all(v["status"] == "ok" for v in vectors)
    header = (out / "rows.csv.results.csv").read_text().splitlines()[0]
    assert "output_label" in header.split(",")  # the model's "label" output, not the label column
    console = capsys.readouterr().err
    assert "demo-patient-bundle.json: 1 records, 1 ok, 0 failed" in console
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no work folders left


def test_failed_records_and_unreadable_files_exit_1(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_text("neither FHIR nor HL7\n")
    hl7 = REPO / "fixtures" / "hl7" / "batch-fhs-bhs.hl7"
    out = tmp_path / "out"
    assert main(["score", "-c", str(demo), "-o", str(out), "-q", str(junk), str(hl7)]) == 1
    console = capsys.readouterr().err
    assert "junk.bin: not scored (unknown_format)" in console
    assert not (out / "junk.bin.report.json").exists()
    report = json.loads((out / "batch-fhs-bhs.hl7.report.json").read_text())
    assert report["records"]["in"] == 2 and report["format"] == "hl7v2"


def test_unknown_model_is_a_usage_error(demo: Path, tmp_path: Path) -> None:
    bundle = REPO / "fixtures" / "fhir" / "demo-patient-bundle.json"
    assert main(["score", "-c", str(demo), "-m", "nope", "-o", str(tmp_path), str(bundle)]) == 2
    assert main(["score", "-c", str(demo), "-o", str(tmp_path), str(tmp_path / "absent.json")]) == 2


def test_score_files_keeps_going_after_an_unreadable_file(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("x,y\n1,2\n3,4\n")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    settings = BatchSettings("demo", IntakePath.cli, frozenset({OutputKind.ndjson}), Limits())
    console = io.StringIO()
    assert score_files(RecordScorer(), settings, [bad, good], tmp_path / "out", console) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good.csv.report.json",
        "good.csv.results.ndjson",
    ]
    assert "bad.json: not scored (bad_json)" in console.getvalue()


def test_inputs_of_the_same_name_keep_their_own_outputs(tmp_path: Path) -> None:
    for folder, rows in (("a", "1,2\n"), ("b", "3,4\n5,6\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.csv").write_text("p,q\n" + rows)
    settings = BatchSettings("demo", IntakePath.cli, frozenset({OutputKind.ndjson}), Limits())
    inputs = [tmp_path / "a" / "x.csv", tmp_path / "b" / "x.csv"]
    assert score_files(RecordScorer(), settings, inputs, tmp_path / "out", io.StringIO()) == 0
    first = (tmp_path / "out" / "x.csv.results.ndjson").read_text().splitlines()
    second = (tmp_path / "out" / "x.2.csv.results.ndjson").read_text().splitlines()
    assert (len(first), len(second)) == (1, 2)


def test_progress_bar_draws_and_clears() -> None:
    console = io.StringIO()
    bar = ProgressBar(console, enabled=True)
    bar.update(Progress("labs.ndjson", records=12, bytes_read=50, bytes_total=200))
    assert console.getvalue() == "\rlabs.ndjson [#######-----------------------]  25% 12 records"
    bar.clear()
    assert console.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()
    ProgressBar(quiet, enabled=False).update(Progress("x", 1, 1, 1))
    assert quiet.getvalue() == ""
