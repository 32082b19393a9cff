"""``edge-agent mapping check`` and ``explain`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mapping_builders import FHIR, HL7, MAPPINGS, manifest_document

from agent.cli import main

AS_OF = "2026-03-15T12:00:00Z"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest_document()))
    return folder


def test_check_ok(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["mapping", "check", str(MAPPINGS / "demo-site.yaml"), "--bundle", str(bundle)]) == 0
    )
    assert capsys.readouterr().out.startswith("OK: ")


def test_check_prints_errors_with_file_and_line(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (MAPPINGS / "local-site.yaml").read_text().replace('unit: "[degF]"', "unit: degF")
    )
    assert main(["mapping", "check", str(broken), "--bundle", str(bundle)]) == 1
    line = next(i for i, t in enumerate(broken.read_text().splitlines(), 1) if "unit: degF" in t)
    assert capsys.readouterr().out == (
        f"{broken}:{line}: feature 'body_temperature': 'degF' is not a valid UCUM unit\n"
    )


def test_check_without_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["mapping", "check", str(MAPPINGS / "demo-site.yaml"), "--bundle", str(tmp_path)]) == 2
    )
    assert "manifest.json: cannot read" in capsys.readouterr().err


def test_explain_table(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "mapping",
                "explain",
                "--mapping",
                str(MAPPINGS / "demo-site.yaml"),
                "--bundle",
                str(bundle),
                "--as-of",
                AS_OF,
                str(FHIR / "vitals-only-bundle.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "wbc               8.1" in out and "imputed training median" in out
    assert "warning: creatinine: missing, imputed training median" in out


def test_explain_json_from_hl7(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "mapping",
                "explain",
                "--mapping",
                str(MAPPINGS / "demo-site.yaml"),
                "--bundle",
                str(bundle),
                "--as-of",
                AS_OF,
                "--json",
                str(HL7 / "oru-r01-v25.hl7"),
            ]
        )
        == 0
    )
    [result] = json.loads(capsys.readouterr().out)
    assert result["record"] == "ORU0000417"
    assert result["values"] == [104.0, 24.0, 38.6, 98.0, 92.0, 14.2, 132.0, 71.0, 0.0]
    assert result["features"][6]["source"].startswith("Observation http://loinc.org|14682-9")


def test_explain_reports_a_refused_record(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "mapping",
                "explain",
                "--mapping",
                str(MAPPINGS / "demo-site.yaml"),
                "--bundle",
                str(bundle),
                "--as-of",
                AS_OF,
                str(HL7 / "adt-a01-v25.hl7"),
            ]
        )
        == 1
    )
    assert "refused: feature 'heart_rate': no value" in capsys.readouterr().out


DEMO_BUNDLE = MAPPINGS.parents[1] / "fixtures" / "demo" / "build" / "deterioration"


@pytest.mark.skipif(
    not (DEMO_BUNDLE / "manifest.json").exists(), reason="the demo bundle has not been built"
)
@pytest.mark.parametrize("name", ["demo-site.yaml", "local-site.yaml"])
def test_shipped_mappings_fit_the_real_demo_bundle(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mapping", "check", str(MAPPINGS / name), "--bundle", str(DEMO_BUNDLE)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")


def _sample_rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("feature"))
    rows = {}
    for line in lines[start + 1 :]:
        if line.strip().startswith("warning:"):
            break
        cells = [c for c in line.strip().split("  ") if c]
        rows[cells[0].strip()] = [c.strip() for c in cells[1:]]
    return rows


def test_check_with_a_sample_reports_each_feature(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ward = FHIR / "demo-ward-export.ndjson"
    code = main(
        [
            "mapping",
            "check",
            str(MAPPINGS / "demo-site.yaml"),
            "--bundle",
            str(bundle),
            "--sample",
            str(ward),
            "--as-of",
            AS_OF,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sample: 40 patient record(s)" in out
    rows = _sample_rows(out)
    assert rows["heart_rate"][0] == "40/40" and rows["heart_rate"][-1] == "0"
    assert "warning" not in out


def test_check_with_a_sample_that_lacks_vitals_warns_and_fails(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admission = HL7 / "adt-a01-v25.hl7"  # an admission: demographics, no vital signs
    code = main(
        [
            "mapping",
            "check",
            str(MAPPINGS / "demo-site.yaml"),
            "--bundle",
            str(bundle),
            "--sample",
            str(admission),
            "--as-of",
            AS_OF,
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "warning: heart_rate was never found in the sample" in out
    assert _sample_rows(out)["heart_rate"][-1] == "missing 1"


def test_check_with_a_late_sample_says_how_far_outside_the_window(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ward = FHIR / "demo-ward-export.ndjson"
    main(
        [
            "mapping",
            "check",
            str(MAPPINGS / "demo-site.yaml"),
            "--bundle",
            str(bundle),
            "--sample",
            str(ward),
            "--as-of",
            "2026-03-18T12:00:00Z",
        ]
    )  # three days later
    outside = _sample_rows(capsys.readouterr().out)["heart_rate"][3]
    assert outside.startswith("40 (median ") and outside.endswith(" h late)")
