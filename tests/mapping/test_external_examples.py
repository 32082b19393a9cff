"""The demo site mapping on records written outside this project (fixtures/external, see
SOURCES.md): the features are the values printed in the examples, labs are imputed with a
warning, and what cannot be mapped is refused naming the feature."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mapping_builders import MAPPINGS, ROOT

from agent.bundle.manifest import BundleManifest
from agent.errors import ImplausibleValue, UnmappableRecord
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.records import parse_records
from agent.types import FeatureVector, PatientRecord, RecordFormat

EXTERNAL = ROOT / "fixtures" / "external"
SPEC_OBSERVATIONS = [
    "observation-example-heart-rate.json",
    "observation-example-respiratory-rate.json",
    "observation-example-body-temperature.json",
    "observation-example-bloodpressure.json",
    "observation-example-satO2.json",
]
# Values as printed in the examples' narratives, in the model's units.
SPEC_VITALS = {
    "heart_rate": 44.0,
    "respiratory_rate": 26.0,
    "body_temperature": 36.5,
    "systolic_bp": 107.0,
    "spo2": 95.0,
}


def _spec_collection(limits: Limits) -> PatientRecord:
    """The five R4 vital-signs examples and the R4 Patient example f001 as one collection.

    The Observation examples are about ``Patient/example``, whose R4 example is not in the
    stored mirrors; their subject is pointed at f001 here (in memory, nothing else changed),
    so that the collection is one patient as it would be in a real export."""
    patient = json.loads((EXTERNAL / "fhir" / "patient-example-f001-pieter.json").read_bytes())
    observations = [json.loads((EXTERNAL / "fhir" / n).read_bytes()) for n in SPEC_OBSERVATIONS]
    for observation in observations:
        observation["subject"] = {"reference": "Patient/f001"}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in [patient, *observations]],
    }
    [record] = parse_records(json.dumps(bundle).encode(), RecordFormat.fhir_json, limits=limits)
    return record


def _by_name(vector: FeatureVector) -> dict[str, Any]:
    return {f.name: f for f in vector.features}


@pytest.fixture
def limits() -> Limits:
    return Limits()


@pytest.fixture
def demo(manifest: BundleManifest) -> SiteMapping:
    return load_mapping(MAPPINGS / "demo-site.yaml", manifest)


def test_spec_examples_give_the_printed_values(
    manifest: BundleManifest, tmp_path: Path, limits: Limits
) -> None:
    """The examples were measured years apart (1999, 2012, 2014); the demo site's look-back
    windows (24 h / 72 h) are widened in a copy of its mapping, every other line unchanged,
    so that one as-of sees them all."""
    text = (MAPPINGS / "demo-site.yaml").read_text()
    widened = tmp_path / "demo-site-wide.yaml"
    widened.write_text(re.sub(r"window: \d+h", "window: 1000w", text))
    mapping = load_mapping(widened, manifest)
    vector = mapping.extract(_spec_collection(limits), datetime(2015, 1, 1, tzinfo=UTC))
    features = _by_name(vector)
    assert {n: features[n].value for n in SPEC_VITALS} == SPEC_VITALS
    assert not any(features[n].imputed for n in SPEC_VITALS)
    assert features["systolic_bp"].source.startswith("Observation component")
    assert features["age"].value == 70.0  # born 1944-11-17
    assert features["sex"].display == "male"
    assert features["wbc"].imputed and features["creatinine"].imputed
    assert vector.warnings == (
        "wbc: missing, imputed training median",
        "creatinine: missing, imputed training median",
    )


def test_spec_examples_at_the_demo_windows_refuse_naming_a_vital(
    demo: SiteMapping, limits: Limits
) -> None:
    """At the end of the day of the 1999 examples (dated to the day: their day lies wholly
    in the 24 h window), the 2012 BP and 2014 SpO2 are in the future."""
    with pytest.raises(UnmappableRecord) as caught:
        demo.extract(_spec_collection(limits), datetime(1999, 7, 3, tzinfo=UTC))
    assert str(caught.value) == (
        "feature 'systolic_bp': no value within the 24 h window before the as-of time; "
        "values exist outside it; "
        "feature 'spo2': no value within the 24 h window before the as-of time; "
        "values exist outside it"
    )


def test_a_value_dated_to_its_day_is_refused_where_the_day_cannot_place_it(
    demo: SiteMapping, limits: Limits
) -> None:
    """At noon on that day, a vital dated only 1999-07-02 may have been taken after noon:
    read as midnight it would be scored as if known before the as-of time."""
    with pytest.raises(UnmappableRecord) as caught:
        demo.extract(_spec_collection(limits), datetime(1999, 7, 2, 12, tzinfo=UTC))
    assert str(caught.value).startswith(
        "feature 'heart_rate': Observation http://loinc.org|8867-4 is dated only to the day, "
        "which cannot place it in the look-back window"
    )
    assert caught.value.feature == "heart_rate"


def test_synthea_child_is_refused_by_the_adult_models_age_range(
    demo: SiteMapping, limits: Limits
) -> None:
    raw = (EXTERNAL / "fhir" / "synthea-covid-juvenile-trimmed.json").read_bytes()
    [record] = parse_records(raw, RecordFormat.fhir_json, limits=limits)
    # one hour after the encounter's vitals (2020-03-07T10:01:22-08:00)
    as_of = datetime(2020, 3, 7, 19, 1, 22, tzinfo=UTC)
    with pytest.raises(ImplausibleValue) as caught:  # a 4-year-old, and the model is adults'
        demo.extract(record, as_of)
    assert caught.value.feature == "age"
    assert str(caught.value) == (
        "feature 'age': value outside the plausible range [18, 110] a "
        "(a wrong unit or a typo?); the mapping says refuse"
    )


@pytest.mark.parametrize("name", ["reportstream-elr-oru-r01-v251.hl7", "hl7-goja-adt-a01-v24.hl7"])
def test_hl7_without_vitals_is_refused_naming_the_feature(
    name: str, demo: SiteMapping, limits: Limits
) -> None:
    [record] = parse_records(
        (EXTERNAL / "hl7" / name).read_bytes(), RecordFormat.hl7v2, limits=limits
    )
    with pytest.raises(UnmappableRecord) as caught:
        demo.extract(record, datetime(2021, 12, 17, 18, tzinfo=UTC))
    assert str(caught.value) == "; ".join(  # every vital, each named once
        f"feature {name!r}: no value in the record and the mapping says refuse"
        for name in SPEC_VITALS
    )
