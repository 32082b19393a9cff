"""FHIR R4 JSON and NDJSON into PatientRecords: shapes, grouping, validation errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.errors import FhirError, RecordError, UnsupportedMediaType
from agent.limits import Limits
from agent.records import RecordsConfig, parse_records
from agent.records.config import FhirValidation
from agent.types import RecordFormat

FHIR = Path(__file__).resolve().parents[2] / "fixtures" / "fhir"


def _json(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FHIR / name).read_bytes())
    return loaded


def _parse(doc: Any, limits: Limits) -> list[Any]:
    return parse_records(json.dumps(doc).encode(), RecordFormat.fhir_json, limits=limits)


def test_demo_bundle_is_one_patient_with_thirty_observations(limits: Limits) -> None:
    [record] = parse_records(
        (FHIR / "demo-patient-bundle.json").read_bytes(), RecordFormat.fhir_json, limits=limits
    )
    assert record.patient is not None and record.patient["gender"] == "female"
    assert len(record.observations) == 30
    assert record.source == "fhir"
    assert record.label == f"Patient/{record.patient['id']}"


def test_single_resource(limits: Limits) -> None:
    observation = _json("demo-patient-bundle.json")["entry"][1]["resource"]
    [record] = _parse(observation, limits)
    assert record.patient is None and len(record.observations) == 1


def test_bundle_without_patient_still_yields_one_record(limits: Limits) -> None:
    bundle = _json("demo-patient-bundle.json")
    bundle["entry"] = bundle["entry"][1:]
    [record] = _parse(bundle, limits)
    assert record.patient is None and len(record.observations) == 30


def test_subject_by_relative_and_absolute_reference(limits: Limits) -> None:
    bundle = _json("demo-patient-bundle.json")
    patient_id = bundle["entry"][0]["resource"]["id"]
    bundle["entry"][1]["resource"]["subject"] = {"reference": f"Patient/{patient_id}"}
    bundle["entry"][2]["resource"]["subject"] = {
        "reference": f"https://ehr.example.org/fhir/Patient/{patient_id}/_history/3"
    }
    bundle["type"] = "searchset"
    [record] = _parse(bundle, limits)
    assert len(record.observations) == 30


def test_ndjson_groups_across_lines_and_bundles(limits: Limits) -> None:
    records = parse_records(
        (FHIR / "multi-patient.ndjson").read_bytes(), RecordFormat.fhir_ndjson, limits=limits
    )
    assert [r.patient["birthDate"] for r in records] == ["1954-07-22", "1988-01-30"]
    assert [len(r.observations) for r in records] == [3, 3]


def test_nested_bundle(limits: Limits) -> None:
    inner = _json("demo-patient-bundle.json")
    outer = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
    [record] = _parse(outer, limits)
    assert len(record.observations) == 30


def test_subjectless_observation_with_two_patients_is_refused(limits: Limits) -> None:
    bundle = _json("demo-patient-bundle.json")
    other = json.loads(json.dumps(bundle["entry"][0]))
    other["resource"]["id"] = "other"
    other["fullUrl"] = "urn:uuid:other"
    del bundle["entry"][3]["resource"]["subject"]
    bundle["entry"].append(other)
    first, second, orphans = _parse(bundle, limits)
    assert first.problem is None and second.problem is None
    assert orphans.problem is not None and "without a subject" in orphans.problem
    assert len(orphans.observations) == 1 and orphans.subject is None


def test_get_and_delete_transaction_entries_carry_nothing(limits: Limits) -> None:
    bundle = _json("demo-patient-bundle.json")
    bundle["type"] = "transaction"
    for entry in bundle["entry"]:
        entry["request"] = {"method": "PUT", "url": "x"}
    observations = len(_parse(bundle, limits)[0].observations)
    bundle["entry"][3]["request"] = {"method": "DELETE", "url": "Observation/1"}
    bundle["entry"][4]["request"] = {"method": "GET", "url": "Observation/2"}
    [record] = _parse(bundle, limits)
    assert len(record.observations) == observations - 2


def test_other_resource_types_are_accepted_and_ignored(limits: Limits) -> None:
    bundle = _json("demo-patient-bundle.json")
    bundle["entry"].append(
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c1",
                "subject": {"reference": "Patient/x"},
            }
        }
    )
    [record] = _parse(bundle, limits)
    assert len(record.observations) == 30


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (
            lambda r: r["valueQuantity"].update(value="SECRET-7731"),
            r"Observation at Bundle\.entry\[1\]\.resource\.valueQuantity\.value",
        ),
        (
            lambda r: r.update(effectiveDateTime="SECRET-7731"),
            r"Bundle\.entry\[1\]\.resource\.effectiveDateTime",
        ),
        (lambda r: r.update(status="SECRET-7731"), r"Bundle\.entry\[1\]\.resource\.status"),
        (
            lambda r: r.update(SECRET_7731="x"),
            r"Bundle\.entry\[1\]\.resource: holds an element not defined",
        ),
        (lambda r: r.update(resourceType="SECRET-7731"), r"not a FHIR R4 resource type"),
        (lambda r: r["subject"].update(reference=7731), r"subject\.reference: expected a str"),
    ],
)
def test_invalid_resource_errors_name_the_place_not_the_value(
    mutate: Any, where: str, limits: Limits
) -> None:
    bundle = _json("demo-patient-bundle.json")
    mutate(bundle["entry"][1]["resource"])
    with pytest.raises(FhirError, match=where) as caught:
        _parse(bundle, limits)
    # Neither a value nor an unknown key (input, not schema) is ever echoed.
    message = str(caught.value)
    assert "7731" not in message and "SECRET" not in message
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        # essential stops at the first fault; full reports up to three, the models' first
        (FhirValidation.essential, "resource.effectiveDateTime"),
        (FhirValidation.full, "resource.valueQuantity.value"),
    ],
)
def test_invalid_fixture(mode: FhirValidation, names: str, limits: Limits) -> None:
    with pytest.raises(FhirError) as caught:
        parse_records(
            (FHIR / "invalid-observation.json").read_bytes(),
            RecordFormat.fhir_json,
            limits=limits,
            config=RecordsConfig(fhir_validation=mode),
        )
    assert names in str(caught.value)
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"resourceType": "Patient", "id": "SECRET"', r"body: not valid JSON .* line 1"),
        (b"[1, 2]", r"resource: expected a JSON object"),
        (b'{"resourceType": "Bundle", "type": "SECRET-type"}', r"Bundle at Bundle\.type"),
        (b'{"resourceType": "Bundle", "type": "collection", "entry": [3]}', r"Bundle\.entry"),
        (b"[" * 100_000, r"nested too deeply|not valid JSON"),
        (b'{"resourceType": "Observation", "valueQuantity": {"value": NaN}}', r"NaN or inf"),
        (b'{"resourceType": "Observation", "valueQuantity": {"value": 1e999}}', r"NaN or inf"),
        (b'{"resourceType": "Observation", "id": ' + b"9" * 5000 + b"}", r"out of range"),
    ],
)
def test_malformed_json(body: bytes, where: str, limits: Limits) -> None:
    with pytest.raises(FhirError, match=where) as caught:
        parse_records(body, RecordFormat.fhir_json, limits=limits)
    assert "SECRET" not in str(caught.value)


def test_ndjson_error_names_the_line(limits: Limits) -> None:
    lines = (FHIR / "multi-patient.ndjson").read_bytes().splitlines()
    broken = json.loads(lines[2])
    broken["valueQuantity"]["value"] = "SECRET"
    lines[2] = json.dumps(broken).encode()
    with pytest.raises(FhirError, match=r"line 3: resource\.valueQuantity\.value"):
        parse_records(b"\n".join(lines), RecordFormat.fhir_ndjson, limits=limits)


def test_limits(limits: Limits) -> None:
    body = (FHIR / "demo-patient-bundle.json").read_bytes()
    with pytest.raises(FhirError, match="more than 10 resources"):
        parse_records(body, RecordFormat.fhir_json, limits=Limits(records_per_request_max=10))
    with pytest.raises(RecordError, match="larger than 100 bytes"):
        parse_records(body, RecordFormat.fhir_json, limits=Limits(http_body_max=100))
    with pytest.raises(UnsupportedMediaType):
        parse_records(body, "csv", limits=limits)  # type: ignore[arg-type]
