"""Records written outside this project (fixtures/external, see SOURCES.md) parse, or are
refused with an error that says where and why and quotes no value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import FhirError, Hl7Error
from agent.limits import Limits
from agent.records import RecordsConfig, parse_records
from agent.records.config import FhirValidation
from agent.types import ElementReach, RecordFormat

EXTERNAL = Path(__file__).resolve().parents[2] / "fixtures" / "external"
FULL = RecordsConfig(fhir_validation=FhirValidation.full)
SPEC_OBSERVATIONS = [
    "observation-example-heart-rate.json",
    "observation-example-respiratory-rate.json",
    "observation-example-body-temperature.json",
    "observation-example-bloodpressure.json",
    "observation-example-satO2.json",
]


@pytest.mark.parametrize("name", SPEC_OBSERVATIONS)
def test_spec_vital_signs_example_parses_as_one_observation(name: str, limits: Limits) -> None:
    [record] = parse_records(
        (EXTERNAL / "fhir" / name).read_bytes(), RecordFormat.fhir_json, limits=limits
    )
    assert record.patient is None and len(record.observations) == 1
    assert record.observations[0]["subject"] == {"reference": "Patient/example"}


def test_spec_patient_example_parses(limits: Limits) -> None:
    [record] = parse_records(
        (EXTERNAL / "fhir" / "patient-example-f001-pieter.json").read_bytes(),
        RecordFormat.fhir_json,
        limits=limits,
    )
    assert record.patient is not None and record.patient["gender"] == "male"
    assert record.observations == ()


def test_spec_examples_of_different_patients_stay_apart(limits: Limits) -> None:
    """The Observation examples are about Patient/example, the Patient example is f001: in
    one collection they are two patients, not one."""
    names = ["patient-example-f001-pieter.json", *SPEC_OBSERVATIONS]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": json.loads((EXTERNAL / "fhir" / n).read_bytes())} for n in names],
    }
    records = parse_records(json.dumps(bundle).encode(), RecordFormat.fhir_json, limits=limits)
    assert sorted((r.label, r.patient is not None, len(r.observations)) for r in records) == [
        ("Patient/example", False, 5),
        ("Patient/f001", True, 0),
    ]


def test_dstu2_patient_is_refused_naming_the_elements(limits: Limits) -> None:
    raw = (EXTERNAL / "fhir" / "dstu2" / "patient-example.json").read_bytes()
    with pytest.raises(FhirError) as caught:
        parse_records(raw, RecordFormat.fhir_json, limits=limits, config=FULL)
    message = str(caught.value)
    assert "name[0].family: expected a string" in message
    assert "contact[0].name._family: value is not of the element's FHIR type" in message
    assert ".root" not in message
    for value in ("Chalmers", "Marché", "1974-12-25", "12345"):
        assert value not in message


def test_dstu2_patient_passes_essential_unless_a_mapping_reads_its_names(limits: Limits) -> None:
    """The default mode refuses the same element once a FHIRPath feature can read it."""
    raw = (EXTERNAL / "fhir" / "dstu2" / "patient-example.json").read_bytes()
    assert parse_records(raw, RecordFormat.fhir_json, limits=limits)
    reach = ElementReach((("Patient", frozenset({"Patient", "name", "family", "first"})),))
    with pytest.raises(FhirError) as caught:
        parse_records(raw, RecordFormat.fhir_json, limits=limits, reach=reach)
    assert "Patient at resource.name[0].family: expected a string" in str(caught.value)
    assert "Chalmers" not in str(caught.value)


def test_synthea_batch_bundle_is_one_patient(limits: Limits) -> None:
    raw = (EXTERNAL / "fhir" / "synthea-covid-juvenile-trimmed.json").read_bytes()
    [record] = parse_records(raw, RecordFormat.fhir_json, limits=limits)
    assert record.patient is not None and record.patient["birthDate"] == "2015-10-20"
    assert len(record.observations) == 7  # subjects are urn:uuid: fullUrls, all resolved


def test_public_elr_oru_parses_coded_and_numeric_results(limits: Limits) -> None:
    raw = (EXTERNAL / "hl7" / "reportstream-elr-oru-r01-v251.hl7").read_bytes()
    assert b"\r" not in raw  # LF segment ends, as published
    [record] = parse_records(raw, RecordFormat.hl7v2, limits=limits)
    assert record.patient is not None and record.patient["gender"] == "female"
    coded, age = record.observations
    assert coded["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert age["valueQuantity"] == {
        "value": 18.0,
        "unit": "year",
        "system": "http://unitsofmeasure.org",
        "code": "a",
    }


def test_public_adt_a01_parses_patient_only(limits: Limits) -> None:
    raw = (EXTERNAL / "hl7" / "hl7-goja-adt-a01-v24.hl7").read_bytes()
    [record] = parse_records(raw, RecordFormat.hl7v2, limits=limits)
    assert record.patient is not None and record.patient["gender"] == "male"
    assert record.observations == ()


def test_standard_pmu_b01_is_refused_as_unsupported_message_type(limits: Limits) -> None:
    raw = (EXTERNAL / "hl7" / "hl7-v251-standard-pmu-b01.hl7").read_bytes()
    with pytest.raises(Hl7Error) as caught:
        parse_records(raw, RecordFormat.hl7v2, limits=limits)
    message = str(caught.value)
    assert "MSH-9" in message and "message type not supported" in message
    assert "PMU" not in message and "HIPPOCRATES" not in message


def test_adt_with_next_of_kin_diagnoses_and_procedures_parses_patient_only(limits: Limits) -> None:
    raw = (EXTERNAL / "hl7" / "jute-example-adt-a01-v23.hl7").read_bytes()
    [record] = parse_records(raw, RecordFormat.hl7v2, limits=limits)
    assert record.patient is not None and record.patient["birthDate"] == "1933-09-10"
    assert record.observations == ()  # NK1, DG1, DRG, PR1 are not read


def test_oru_with_a_repeated_obr3_is_refused_naming_the_field(limits: Limits) -> None:
    """OBR-3 (filler order number) does not repeat in v2.3; this sender repeats it. The agent
    refuses the message, as hl7apy does, and says where; it quotes no order number."""
    raw = (EXTERNAL / "hl7" / "jute-example-oru-r01-v23.hl7").read_bytes()
    with pytest.raises(Hl7Error) as caught:
        parse_records(raw, RecordFormat.hl7v2, limits=limits)
    assert str(caught.value) == "segment OBR #5, field OBR-3: field does not repeat in v2.3"
