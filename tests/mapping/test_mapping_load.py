"""Loading a mapping: the shipped mappings load; every kind of mistake is refused at load
time with the file, the line and the feature."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mapping_builders import MAPPINGS

from agent.bundle.manifest import BundleManifest
from agent.errors import MappingError, UnitError
from agent.mapping import load_mapping

BASE = (MAPPINGS / "demo-site.yaml").read_text()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


@pytest.mark.parametrize("name", ["demo-site.yaml", "local-site.yaml"])
def test_shipped_mappings_load(name: str, manifest: BundleManifest) -> None:
    mapping = load_mapping(MAPPINGS / name, manifest)
    assert mapping.model == "deterioration"
    assert mapping.feature_names() == manifest.feature_names()


def _refused(
    tmp_path: Path, text: str, manifest: BundleManifest, error: type[Exception] = MappingError
) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(error) as caught:
        load_mapping(path, manifest)
    return str(caught.value)


def test_unknown_unit_names_file_line_and_feature(tmp_path: Path, manifest: BundleManifest) -> None:
    text = BASE.replace("unit: Cel", "unit: degrees")
    message = _refused(tmp_path, text, manifest, UnitError)
    line = _line(text, "unit: degrees")
    assert message == (
        f"{tmp_path / 'site.yaml'}:{line}: feature 'body_temperature': "
        "'degrees' is not a valid UCUM unit"
    )


def test_incompatible_unit_is_refused(tmp_path: Path, manifest: BundleManifest) -> None:
    text = BASE.replace("unit: mm[Hg]", "unit: kg")
    message = _refused(tmp_path, text, manifest, UnitError)
    assert (
        f"site.yaml:{_line(text, 'unit: kg')}: feature 'systolic_bp': kg cannot be "
        "converted to mm[Hg]" in message
    )


def test_mass_to_substance_needs_molar_mass(tmp_path: Path, manifest: BundleManifest) -> None:
    text = BASE.replace("unit: umol/L", "unit: mg/dL").replace(
        "    molar_mass: 113.12                    # g/mol, for values that arrive in mg/dL\n", ""
    )
    message = _refused(tmp_path, text, manifest, UnitError)
    assert f":{_line(text, 'unit: mg/dL')}: feature 'creatinine': " in message
    assert "needs molar_mass" in message


def test_every_problem_is_reported_in_line_order(tmp_path: Path, manifest: BundleManifest) -> None:
    text = (
        BASE.replace("loinc|9279-1", "nosuch|9279-1")
        .replace(
            "categories: {female: female, male: male}", "categories: {female: woman, male: male}"
        )
        .replace("    reduce: latest\n", "    reduce: median\n")
    )
    message = _refused(tmp_path, text, manifest)
    lines = message.splitlines()
    assert len(lines) == 1  # schema errors stop before model checks
    assert f":{_line(text, 'reduce: median')}: feature 'heart_rate': Input should be" in lines[0]
    text = text.replace("reduce: median", "reduce: max")
    lines = _refused(tmp_path, text, manifest).splitlines()
    assert [re.sub(r"^.*?:(\d+): ", r"\1 ", x).split(":")[0] for x in lines] == [
        f"{_line(text, 'nosuch|')} feature 'respiratory_rate'",
        f"{_line(text, 'woman')} feature 'sex'",
    ]
    assert "code system alias 'nosuch'" in lines[0]
    assert "'woman' is not a level of the model (female, male)" in lines[1]


@pytest.mark.parametrize(
    ("old", "new", "needle", "expected"),
    [
        ("model: deterioration", "model: sepsis", "model: sepsis", "mapping is for model"),
        ("  age:\n    patient: age\n", "", "features:", "feature 'age': model input is not"),
        (
            "  age:\n",
            "  weight:\n    codes: [loinc|29463-7]\n  age:\n",
            "weight:",
            "feature 'weight': not an input",
        ),
        (
            "    patient: gender\n",
            "    patient: gender\n    reduce: mean\n",
            "reduce: mean",
            "feature 'sex': a categorical feature reduces by latest or first",
        ),
        (
            "    patient: age\n",
            "    patient: gender\n    categories: {a: b}\n",
            "patient: gen",
            "feature 'age': patient: gender needs a categorical",
        ),
        (
            "    codes: [loinc|8867-4]\n",
            "    fhirpath: Observation.where(\n",
            "fhirpath:",
            "feature 'heart_rate': FHIRPath syntax error at column 19",
        ),
        (
            "    codes: [loinc|8867-4]\n",
            "    fhirpath: Observation.nosuch(1)\n",
            "fhirpath:",
            "feature 'heart_rate': FHIRPath expression fails",
        ),
        (
            "    window: 24h\n    missing: refuse\n",
            "    window: 24 hours\n",
            "24 hours",
            "window must be a number",
        ),
        (
            "    missing: refuse\n",
            "    missing: constant\n",
            "heart_rate:",
            "missing: constant needs a constant",
        ),
        ("  wbc:\n", "  wbc:\n    bogus: 1\n", "bogus", "feature 'wbc': Extra inputs"),
        (
            "    unseen: refuse\n",
            "    missing: constant\n    constant: other\n",
            "constant: o",
            "feature 'sex': constant must be one of the model's levels",
        ),
    ],
)
def test_load_time_refusals(
    old: str, new: str, needle: str, expected: str, tmp_path: Path, manifest: BundleManifest
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    message = _refused(tmp_path, text, manifest)
    assert f"site.yaml:{_line(text, needle)}: " in message
    assert expected in message


def test_unit_alias_must_be_ucum(tmp_path: Path, manifest: BundleManifest) -> None:
    text = BASE.replace(
        "features:\n", "unit_aliases:\n  mmHg: mm[Hg]\n  bpm: beats\nfeatures:\n", 1
    )
    message = _refused(tmp_path, text, manifest, UnitError)
    assert message.endswith(
        f"site.yaml:{_line(text, 'bpm:')}: unit_aliases: 'beats' is not a valid UCUM unit"
    )


def test_median_needs_a_training_median(tmp_path: Path, manifest: BundleManifest) -> None:
    document = manifest.model_dump(mode="json")
    document["reference"]["features"]["wbc"]["median"] = None
    bare = BundleManifest.model_validate(document)
    message = _refused(tmp_path, BASE, bare)
    assert f":{_line(BASE, 'missing: median')}: feature 'wbc': missing: median" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: x\nmodel: deterioration\nfeatures:\n  a: [1\n", r"site\.yaml:5: not valid YAML"),
        ("site: x\nsite: y\n", r"site\.yaml:2: duplicate key 'site'"),
        ("- 1\n", r"site\.yaml:1: Input should be a valid dictionary"),
    ],
)
def test_bad_yaml(text: str, expected: str, tmp_path: Path, manifest: BundleManifest) -> None:
    assert re.search(expected, _refused(tmp_path, text, manifest))


def test_unreadable_file(tmp_path: Path, manifest: BundleManifest) -> None:
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "absent.yaml", manifest)
