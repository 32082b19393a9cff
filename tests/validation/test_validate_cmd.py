"""``edge-agent validate`` end to end: the real demo bundle, site mapping and pipeline, on
the shipped demo ward export and on the demo's holdout history, checked against
scikit-learn on the very scores the pipeline gives, and searched for identifiers."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from agent.cli import main
from agent.config import load_config
from agent.instant import parse_instant
from agent.pipeline import ScoringPipeline
from agent.types import IntakePath, RecordFormat, ScoreRequest
from agent.validation.calibration import logit
from tests.intake.dropfolder_demo import demo_config
from tests.integration.monitoring_records import (
    AS_OF,
    Identity,
    ReferenceRow,
    bundle,
    patient_resources,
)

REPO = Path(__file__).resolve().parents[2]
WARD_EXPORT = REPO / "fixtures" / "fhir" / "demo-ward-export.ndjson"
WARD_OUTCOMES = REPO / "fixtures" / "demo" / "ward-outcomes.csv"
HOLDOUT = REPO / "fixtures" / "demo" / "holdout.csv"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_config(tmp_path_factory.mktemp("demo"), {"model": "deterioration"})


def run(demo: Path, outcomes: Path, out: Path, *records: Path) -> dict[str, Any]:
    argv = ["validate", "-c", str(demo), "--outcomes", str(outcomes), "--out", str(out)]
    assert main([*argv, *(str(r) for r in records)]) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def assert_no_identifier(out: Path, identifiers: set[str]) -> None:
    """Neither report names any of ``identifiers``, nor holds anything shaped like an id."""
    for name in ("report.json", "report.html"):
        text = (out / name).read_text()
        assert not UUID.search(text), name
        found = sorted(i for i in identifiers if i in text)
        assert not found, (name, found[:3])


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    for external in ("<script", "<link", "src=", "href=", "url(", "@import"):
        assert external not in html
    assert set(re.findall(r"https?://[^\s\"'<]+", html)) == {"http://www.w3.org/2000/svg"}


def test_the_demo_ward_export_validates_with_its_committed_outcomes(
    demo: Path, tmp_path: Path
) -> None:
    report = run(demo, WARD_OUTCOMES, tmp_path, WARD_EXPORT)
    counts = report["counts"]
    assert counts["labelled"] == 42 and counts["scored"] == 40
    # two days later the vitals are outside their 24 h windows, as the live agent would find
    assert counts["refused"] == {"no_record": 1, "missing": 1}
    overall = report["overall"]
    assert overall["patients"] == 40 and overall["positives"] == 1
    assert overall["auroc"]["low"] is None  # one positive: no interval, and no verdict on it
    assert report["model"]["risk_output"] == "probability_1"
    assert report["training_metrics"]["holdout_auroc"] == 0.8386
    # one outcome: nothing judged, and its score not drawn
    assert {v["status"] for v in report["verdicts"]} == {"not_compared"}
    assert overall["distribution"]["outcome"] is None
    assert overall["distribution"]["no_outcome"] is not None
    ward = next(d for d in report["subgroups"] if d["dimension"] == "ward")
    assert [(g["group"], g["patients"]) for g in ward["groups"]] == [("ward A", 20), ("ward B", 20)]
    html = (tmp_path / "report.html").read_text()
    assert_self_contained(html)
    assert "Does deterioration 1.0.0 work here?" in html
    with WARD_OUTCOMES.open() as handle:
        named = {row["patient"] for row in csv.DictReader(handle)}
    assert_no_identifier(tmp_path, named | {n.removeprefix("Patient/") for n in named})


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "ward_outcomes", REPO / "fixtures" / "demo" / "ward_outcomes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_ward_outcomes_are_what_the_generator_draws(tmp_path: Path) -> None:
    generator = _load_generator()
    generator.OUT = tmp_path / "ward-outcomes.csv"
    generator.main()
    assert generator.OUT.read_text() == WARD_OUTCOMES.read_text()


def _holdout(folder: Path) -> tuple[Path, Path, list[bytes], list[int], set[str]]:
    """The demo's 200 holdout rows as patients with distinctive identities, an outcomes
    file that names them by MRN (as PID-3 would), each patient's record, and the labels."""
    export, outcomes = folder / "history.ndjson", folder / "outcomes.csv"
    bodies, labels, identifiers = [], [], set()
    with HOLDOUT.open() as source, export.open("w") as out, outcomes.open("w") as table:
        table.write("patient,as_of,label,ward\n")
        for index, raw in enumerate(csv.DictReader(source)):
            values = {k: float(v) for k, v in raw.items() if k not in ("sex", "label")}
            identity = Identity(
                family=f"Quenneville{index:03d}",
                given="Zebulon",
                mrn=f"MRN-QX{index:05d}",
                street=f"{index} Larkspur Crescent",
                city="Wolverhampton",
                postal_code="WV9 9ZZ",
            )
            resources = patient_resources(ReferenceRow(values, raw["sex"]), identity)
            out.writelines(json.dumps(r) + "\n" for r in resources)
            table.write(f"{identity.mrn},{AS_OF},{raw['label']},ward {'AB'[index % 2]}\n")
            bodies.append(bundle(resources))
            labels.append(int(raw["label"]))
            identifiers |= {identity.mrn, identity.family, identity.street, str(resources[0]["id"])}
    return export, outcomes, bodies, labels, identifiers


def test_holdout_history_figures_agree_with_scikit_learn_on_the_pipeline_scores(
    demo: Path, tmp_path: Path
) -> None:
    export, outcomes, bodies, labels, identifiers = _holdout(tmp_path)
    report = run(demo, outcomes, tmp_path / "report", export)
    assert report["counts"]["scored"] == 200 and report["counts"]["refused"] == {}

    pipeline = ScoringPipeline.from_config(load_config(demo))
    scores = []
    for body in bodies:
        request = ScoreRequest(
            "deterioration",
            body,
            RecordFormat.fhir_json,
            IntakePath.cli,
            as_of=parse_instant(AS_OF),
        )
        scores.append(pipeline.score(request).predictions[0].outputs["probability_1"])
    overall = report["overall"]
    assert overall["auroc"]["value"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert overall["auprc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert overall["brier"]["value"] == pytest.approx(brier_score_loss(labels, scores), abs=1e-6)
    x = np.array([logit(s) for s in scores])[:, None]
    fit = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, labels)
    assert overall["calibration_slope"]["value"] == pytest.approx(fit.coef_[0][0], abs=1e-6)
    # the model on data it never saw: the publisher's own holdout figure, to 4 decimals
    assert round(overall["auroc"]["value"], 4) == report["training_metrics"]["holdout_auroc"]
    statuses = {v["figure"]: v["status"] for v in report["verdicts"]}
    assert statuses["holdout_auroc"] == "consistent"
    assert statuses["calibration_slope"] == "worse"  # boosted trees: risks too extreme
    assert_no_identifier(tmp_path / "report", identifiers)
    assert_self_contained((tmp_path / "report" / "report.html").read_text())


def test_identifier_shared_by_two_patients_is_refused_not_guessed(
    demo: Path, tmp_path: Path
) -> None:
    export, outcomes, _, _, _ = _holdout(tmp_path)
    text = export.read_text().replace("MRN-QX00001", "MRN-QX00000")  # two patients, one MRN
    export.write_text(text)
    report = run(demo, outcomes, tmp_path / "report", export)
    assert report["counts"]["refused"] == {"ambiguous_patient": 1, "no_record": 1}
    assert report["counts"]["scored"] == 198


def test_rare_groups_are_neither_shown_nor_named(demo: Path, tmp_path: Path) -> None:
    export, outcomes, _, _, _ = _holdout(tmp_path)
    lines = outcomes.read_text().splitlines()
    # three patients on a ward of their own; a ward name that markup must not break
    lines[1:4] = [re.sub(",ward [AB]$", ",Ward Zanzibar", line) for line in lines[1:4]]
    lines[4:] = [line.replace(",ward A", ",<i>ward A</i>") for line in lines[4:]]
    outcomes.write_text("\n".join(lines) + "\n")
    report = run(demo, outcomes, tmp_path / "report", export)
    ward = next(d for d in report["subgroups"] if d["dimension"] == "ward")
    assert ward["suppressed_groups"] == 1
    assert all(g["patients"] >= 10 for g in ward["groups"])
    for name in ("report.json", "report.html"):
        assert "Zanzibar" not in (tmp_path / "report" / name).read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    assert "&lt;i&gt;ward A&lt;/i&gt;" in html and "<i>ward A</i>" not in html


def test_fewer_than_ten_patients_show_no_figure(demo: Path, tmp_path: Path) -> None:
    export, outcomes, _, _, _ = _holdout(tmp_path)
    outcomes.write_text("\n".join(outcomes.read_text().splitlines()[:10]) + "\n")
    report = run(demo, outcomes, tmp_path / "report", export)
    assert report["counts"]["scored"] == 9
    assert report["overall"] == {"suppressed": True, "reason": "fewer than 10 patients"}
    assert report["period"] is None
    assert report["verdicts"][0]["status"] == "not_compared"
    assert all(g["suppressed"] for d in report["subgroups"][:2] for g in d["groups"])
    assert "Too few patients" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.parametrize(
    "content,message",
    [
        ("patient,label\nx,1\n", "lacks column(s): as_of"),
        (f"patient,as_of,label\nMRN-SECRET,{AS_OF},2\n", "line 2: column label is not 0 or 1"),
        ("patient,as_of,label\nMRN-SECRET,yesterday,1\n", "line 2: column as_of is not an ISO"),
        (
            f"patient,as_of,label\nMRN-SECRET,{AS_OF},1\nMRN-SECRET,{AS_OF},0\n",
            "line 3: the same patient and time as line 2",
        ),
    ],
)
def test_a_bad_outcomes_file_is_a_usage_error_that_names_no_value(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text(content)
    argv = ["validate", "-c", str(demo), "--outcomes", str(outcomes), "--out", str(tmp_path)]
    assert main([*argv, str(WARD_EXPORT)]) == 2
    error = capsys.readouterr().err
    assert message in error and "SECRET" not in error


def test_hl7_records_are_refused_with_a_usage_error(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hl7 = REPO / "fixtures" / "hl7" / "oru-r01-v25.hl7"
    argv = ["validate", "-c", str(demo), "--outcomes", str(WARD_OUTCOMES), "--out", str(tmp_path)]
    assert main([*argv, str(hl7)]) == 2
    assert "validation reads FHIR NDJSON or JSON records, not hl7v2" in capsys.readouterr().err
