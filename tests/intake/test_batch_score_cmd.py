"""``edge-agent score``: the real pipeline (signed demo bundle, wasm model, site mapping)
scoring real fixture files from the command line, and the command's own behaviour."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
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
        (tmp_path / folder / "x.csv").write_text("hr,temp\n" + rows)
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


def test_a_pandas_written_csv_scores_as_bundle_predict_and_load_read_it(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One reading of cells on every path (issue 17): a CSV written by pandas with empty
    and ``NA`` cells and level names scores through ``edge-agent score`` as through
    ``agent.load().predict`` and ``bundle predict``, the site mapping's ``missing: median``
    filling the labs (the same median the bundle's manifest holds); a vital the mapping
    refuses to impute, an unseen category, or a value outside the plausible range fails
    only its row, naming the feature, as a record would be refused."""
    pd = pytest.importorskip("pandas")
    import agent

    bundle = REPO / "fixtures" / "demo" / "build" / "deterioration"
    frame = pd.read_csv(REPO / "fixtures" / "demo" / "holdout.csv").iloc[:12]
    frame = frame.drop(columns="label").assign(label=[f"p{i}" for i in range(12)])
    frame.loc[[1, 4], "wbc"] = np.nan  # written as empty cells
    frame["creatinine"] = frame["creatinine"].astype(object)
    frame.loc[2, "creatinine"] = "NA"
    frame.loc[5, "heart_rate"] = np.nan  # the mapping says refuse
    frame["sex"] = frame["sex"].astype(object)
    frame.loc[7, "sex"] = "unknown"
    frame.loc[9, "body_temperature"] = 100.4  # degF where the model reads Cel
    frame.to_csv(tmp_path / "ward.csv", index=False)
    out = tmp_path / "out"
    argv = ["score", "-c", str(demo), "-o", str(out), "-q", str(tmp_path / "ward.csv")]
    assert main(argv) == 1  # three rows failed
    assert "12 records, 9 ok, 3 failed (missing 1, out_of_range 1, unseen_category 1) ->" in (
        capsys.readouterr().err
    )
    lines = [json.loads(x) for x in (out / "ward.csv.results.ndjson").read_text().splitlines()]
    assert [(x["label"], x["status"]) for x in lines] == [
        (f"p{i}", "error" if i in (5, 7, 9) else "ok") for i in range(12)
    ]
    refused = [(x["reason"], x.get("feature")) for x in (lines[5], lines[7], lines[9])]
    assert refused == [
        ("missing", "heart_rate"),
        ("unseen_category", "sex"),  # the cell names no level: refused as it is read
        ("out_of_range", "body_temperature"),
    ]
    assert "heart_rate" in lines[5]["detail"] and "sex" in lines[7]["detail"]
    assert "[30, 43] Cel" in lines[9]["detail"] and "100.4" not in lines[9]["detail"]

    model = agent.load(bundle)
    medians = {n: model.manifest.reference.features[n].median for n in ("wbc", "creatinine")}
    filled = frame.replace("NA", np.nan).fillna(medians).drop(index=[5, 7, 9])
    expected = model.predict(filled)
    scored = [x for x in lines if x["status"] == "ok"]
    got = np.array([x["outputs"]["probability_1"] for x in scored])
    assert np.abs(got - expected["probability_1"].to_numpy()).max() == 0.0
    filled.to_csv(tmp_path / "filled.csv", index=False)
    printed = model.score_file(tmp_path / "filled.csv").splitlines()
    column = printed[0].split(",").index("probability_1")
    assert [float(r.split(",")[column]) for r in printed[1:]] == pytest.approx(got, abs=1e-8)
