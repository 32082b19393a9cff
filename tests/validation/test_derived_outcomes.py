"""Outcomes read from the records by the site mapping's ``outcome:`` section: the same
report as with a curated label column, when the records hold the events."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.bundle.archive import read_bundle_dir
from agent.bundle.manifest import BundleManifest
from agent.cli import main
from agent.errors import MappingError
from agent.instant import parse_instant
from agent.limits import Limits
from agent.mapping import load_mapping
from tests.intake.dropfolder_demo import demo_config
from tests.integration.monitoring_records import AS_OF, ReferenceRow, patient_resources

REPO = Path(__file__).resolve().parents[2]
HOLDOUT = REPO / "fixtures" / "demo" / "holdout.csv"
ICU = {"system": "http://snomed.info/sct", "code": "305351004"}  # admission to ICU
OUTCOME = """
outcome:
  codes: [snomed|305351004]
  deceased: true
  horizon: 48h
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = demo_config(tmp_path_factory.mktemp("demo"), {"model": "deterioration"})
    mapping = config.parent / "mappings" / "demo-site.yaml"
    mapping.write_text(mapping.read_text() + OUTCOME)
    return config


def _at(hours: float) -> str:
    moment = parse_instant(AS_OF)
    assert moment is not None
    return (moment + timedelta(hours=hours)).isoformat()


def _icu_stay(patient: str, hours: float) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "type": [{"coding": [ICU]}],
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": _at(hours)},
    }


def _history(folder: Path) -> tuple[Path, Path, Path]:
    """The holdout patients with their outcomes written into the records (an ICU admission
    or a death within 48 h; decoys outside the horizon), and two outcome files: moments
    only, and the same moments with the curated labels."""
    export = folder / "history.ndjson"
    moments, labelled = folder / "moments.csv", folder / "labelled.csv"
    with HOLDOUT.open() as source, export.open("w") as out:
        rows = list(csv.DictReader(source))
        moment_lines, labelled_lines = ["patient,as_of"], ["patient,as_of,label"]
        for index, raw in enumerate(rows):
            values = {k: float(v) for k, v in raw.items() if k not in ("sex", "label")}
            resources = patient_resources(ReferenceRow(values, raw["sex"]))
            patient = str(resources[0]["id"])
            if raw["label"] == "1" and index % 2:
                resources.append(_icu_stay(patient, 6))
            elif raw["label"] == "1":
                resources[0]["deceasedDateTime"] = _at(30)
            elif index % 3 == 0:  # before the moment, and after the horizon: not outcomes
                resources += [_icu_stay(patient, -12), _icu_stay(patient, 60)]
            out.writelines(json.dumps(r) + "\n" for r in resources)
            moment_lines.append(f"{patient},{AS_OF}")
            labelled_lines.append(f"{patient},{AS_OF},{raw['label']}")
    moments.write_text("\n".join(moment_lines) + "\n")
    labelled.write_text("\n".join(labelled_lines) + "\n")
    return export, moments, labelled


def _report(demo: Path, outcomes: Path, out: Path, export: Path) -> dict[str, Any]:
    argv = ["validate", "-c", str(demo), "--outcomes", str(outcomes), "--out", str(out)]
    assert main([*argv, str(export)]) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def test_labels_read_from_the_records_give_the_curated_labels_report(
    demo: Path, tmp_path: Path
) -> None:
    export, moments, labelled = _history(tmp_path)
    derived = _report(demo, moments, tmp_path / "derived", export)
    curated = _report(demo, labelled, tmp_path / "curated", export)
    assert derived["overall"]["positives"] == curated["overall"]["positives"] == 15
    assert derived["method"]["labels"] == (
        "derived from the records: http://snomed.info/sct|305351004, death "
        "(Patient.deceasedDateTime) within 48 h after the scored time"
    )
    assert curated["method"]["labels"] == "the outcomes file"
    derived["method"].pop("labels")
    curated["method"].pop("labels")
    assert derived == curated


def test_moments_without_labels_need_an_outcome_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = demo_config(tmp_path / "plain", {"model": "deterioration"})
    export, moments, _ = _history(tmp_path)
    argv = ["validate", "-c", str(plain), "--outcomes", str(moments), "--out", str(tmp_path)]
    assert main([*argv, str(export)]) == 2
    assert "no label column, and the site mapping no outcome section" in capsys.readouterr().err


@pytest.mark.parametrize(
    "section,message",
    [
        ("outcome:\n  codes: [nope|1]\n  horizon: 48h\n", "outcome"),
        ("outcome:\n  horizon: 48h\n", "give codes, deceased: true, or both"),
        ("outcome:\n  codes: [snomed|1]\n  horizon: soon\n", "window must be a number"),
    ],
)
def test_a_bad_outcome_section_is_refused_when_the_mapping_loads(
    tmp_path: Path, section: str, message: str
) -> None:
    mapping = tmp_path / "site.yaml"
    mapping.write_text((REPO / "config" / "mappings" / "demo-site.yaml").read_text() + section)
    bundle = read_bundle_dir(REPO / "fixtures" / "demo" / "build" / "deterioration", Limits())
    manifest = BundleManifest.model_validate_json(bundle["manifest.json"])
    with pytest.raises(MappingError, match=message) as caught:
        load_mapping(mapping, manifest)
    assert "site.yaml:" in str(caught.value)
