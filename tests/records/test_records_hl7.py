"""HL7 v2 into FHIR PatientRecords: message types, versions, batches, the v2-to-FHIR
conversion of PID / PV1 / OBR / OBX, and errors that name segment and field only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from agent.errors import Hl7Error
from agent.limits import Limits
from agent.records import RecordsConfig, parse_records
from agent.types import PatientRecord, RecordFormat

HL7 = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
MSH = "MSH|^~\\&|LAB|HOSP|EDGE|HOSP|20260315120000+0000||ORU^R01^ORU_R01|C1|P|2.5"


def _parse(text: str, limits: Limits, config: RecordsConfig | None = None) -> list[PatientRecord]:
    return parse_records(text.encode(), RecordFormat.hl7v2, limits=limits, config=config)


def _fixture(name: str, limits: Limits) -> list[PatientRecord]:
    return parse_records((HL7 / name).read_bytes(), RecordFormat.hl7v2, limits=limits)


def _assert_valid_r4(record: PatientRecord) -> None:
    """The conversion's output is itself valid FHIR R4."""
    resources: list[Any] = [*record.observations, *record.encounters]
    if record.patient is not None:
        resources.append(record.patient)
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_oru_r01_v25(limits: Limits) -> None:
    [record] = _fixture("oru-r01-v25.hl7", limits)
    _assert_valid_r4(record)
    assert record.label == "ORU0000417" and record.source == "hl7v2"
    assert record.patient == {
        "resourceType": "Patient",
        "id": "pid-1",
        "identifier": [
            {
                "value": "SYN-000417",
                "assigner": {"display": "GENERAL_HOSP"},
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
            }
        ],
        "name": [
            {
                "use": "official",
                "family": "Testpatient",
                "given": ["Avery", "Quinn"],
                "prefix": ["Ms."],
            }
        ],
        "birthDate": "1954-07-22",
        "gender": "female",
    }
    [encounter] = record.encounters
    assert encounter["class"]["code"] == "IMP"
    assert encounter["period"] == {"start": "2026-03-13T14:30:00+00:00"}
    heart_rates = [
        o
        for o in record.observations
        if o["code"]["coding"][0]
        == {"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}
    ]
    assert [o["valueQuantity"]["value"] for o in heart_rates] == [88, 92, 96, 99, 101, 104]
    assert heart_rates[-1]["valueQuantity"] == {
        "value": 104.0,
        "unit": "/min",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    }
    assert heart_rates[-1]["effectiveDateTime"] == "2026-03-15T11:00:00+00:00"
    assert heart_rates[-1]["status"] == "final"
    assert heart_rates[-1]["subject"] == {"reference": "Patient/pid-1"}


def test_adt_a01_with_pv1_and_obx(limits: Limits) -> None:
    [record] = _fixture("adt-a01-v25.hl7", limits)
    _assert_valid_r4(record)
    assert record.patient is not None and record.patient["gender"] == "female"
    assert [o["code"]["coding"][0]["code"] for o in record.observations] == ["8302-2", "29463-7"]
    assert record.encounters[0]["location"] == [{"location": {"display": "ICU 12 B"}}]


def test_v23_local_codes_units_and_escapes(limits: Limits) -> None:
    config = RecordsConfig(hl7_coding_systems={"L": "http://hospital.example.org/codes"})
    [record] = parse_records(
        (HL7 / "oru-r01-v23.hl7").read_bytes(), RecordFormat.hl7v2, limits=limits, config=config
    )
    _assert_valid_r4(record)
    creatinine, wbc, comment = record.observations
    assert creatinine["code"]["coding"][0]["system"] == "http://hospital.example.org/codes"
    # OBX-6 without a coding system: a unit text, not a UCUM code
    assert creatinine["valueQuantity"] == {"value": 1.05, "unit": "mg/dL"}
    # no OBX-14: the time comes from OBR-7, read in the configured zone
    assert creatinine["effectiveDateTime"] == "2026-03-15T09:30:00+00:00"
    assert wbc["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert comment["valueString"] == "Specimen slightly hemolysed & re-run"
    assert record.encounters[0]["class"]["code"] == "EMER"


def test_default_local_system_and_timezone(limits: Limits) -> None:
    config = RecordsConfig(hl7_timezone="Europe/Berlin")
    [record] = parse_records(
        (HL7 / "oru-r01-v23.hl7").read_bytes(), RecordFormat.hl7v2, limits=limits, config=config
    )
    assert record.observations[0]["code"]["coding"][0]["system"] == "urn:hl7v2-local:L"
    assert record.observations[0]["effectiveDateTime"] == "2026-03-15T09:30:00+01:00"


def test_batch_yields_one_record_per_message(limits: Limits) -> None:
    records = _fixture("batch-fhs-bhs.hl7", limits)
    assert [r.label for r in records] == ["B0001", "B0002"]
    assert [r.patient["gender"] for r in records if r.patient] == ["female", "male"]


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])
@pytest.mark.parametrize("kind", ["ADT^A01", "ADT^A04", "ADT^A08", "ORU^R01"])
def test_versions_and_types(version: str, kind: str, limits: Limits) -> None:
    text = "\r".join(
        [
            MSH.replace("ORU^R01^ORU_R01", kind).replace("|2.5", f"|{version}"),
            "PID|1||123^^^H^MR||Doe^Jo||19700101|M",
            "PV1|1|O",
            "OBX|1|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||F|||20260315110000",
        ]
    )
    [record] = _parse(text, limits)
    _assert_valid_r4(record)
    assert record.observations[0]["valueQuantity"]["value"] == 72
    assert record.observations[0]["effectiveDateTime"] == "2026-03-15T11:00:00+00:00"


def test_value_types(limits: Limits) -> None:
    text = "\r".join(
        [
            MSH,
            "PID|1||123^^^H^MR||Doe^Jo||19700101|M",
            "OBX|1|SN|2160-0^Creatinine^LN||<^0.3|mg/dL|||||F",
            "OBX|2|CWE|LA-1^Culture^LN||260385009^Negative^SCT||||||F",
            "OBX|3|ED|PDF^Report^L||^application^pdf^Base64^AAAA||||||F",
            "OBX|4|SN|X^Ratio^L||^1^:^128||||||C",
            "OBX|5|DTM|X^When^L||20260314||||||F",
        ]
    )
    [record] = _parse(text, limits)
    _assert_valid_r4(record)
    sn, cwe, ed, ratio, dtm = record.observations
    assert sn["valueQuantity"] == {"value": 0.3, "comparator": "<", "unit": "mg/dL"}
    assert cwe["valueCodeableConcept"]["coding"][0] == {
        "code": "260385009",
        "system": "http://snomed.info/sct",
        "display": "Negative",
    }
    assert ed["dataAbsentReason"]["coding"][0]["code"] == "unsupported"
    assert ratio["valueRatio"] == {"numerator": {"value": 1.0}, "denominator": {"value": 128.0}}
    assert ratio["status"] == "corrected"
    assert dtm["valueDateTime"] == "2026-03-14"


SECRET = "SECRET-5521"


@pytest.mark.parametrize(
    ("segments", "where"),
    [
        (
            ["PID|1||1^^^H^MR||X||19700101|M", f"OBX|1|NM|8867-4^HR^LN||{SECRET}|/min|||||F"],
            r"segment OBX #3, field OBX-5",
        ),
        ([f"OBX|1|NM|8867-4^HR^LN||80|/min|||||F|||{SECRET}"], r"segment OBX #2, field OBX-14"),
        ([f"OBX|1|NM|8867-4^HR^LN||80|/min|||||{SECRET}"], r"segment OBX #2, field OBX-11"),
        (["OBX|1|NM|8867-4^HR^LN||80|/min|||||"], r"segment OBX #2, field OBX-11: required"),
        (["OBX|1|NM|||80|/min|||||F"], r"segment OBX #2, field OBX-3: required"),
        ([f"PID|1||1^^^H^MR||X||19700101|{SECRET}"], r"segment PID #2, field PID-8"),
        ([f"PID|1||1^^^H^MR||X||{SECRET}|F"], r"segment PID #2, field PID-7"),
        (["PID|1||1^^^H^MR||X||20261345|F"], r"segment PID #2, field PID-7"),
        ([f"PID|1||1^^^H^MR||X\\Q{SECRET}\\"], r"segment PID #2, field PID-5.1: unknown escape"),
        ([f"PID|1||1^^^H^MR||X\\{SECRET}"], r"field PID-5.1: unterminated escape"),
        ([f"PV1|1~{SECRET}|I"], r"segment PV1 #2, field PV1-1: field does not repeat"),
        ([f"QQQ|{SECRET}"], r"segment QQQ #2: not defined in HL7 v2.5"),
        ([f"q{SECRET}|1"], r"segment #2: not a valid segment name"),
    ],
)
def test_malformed_names_segment_and_field_not_value(
    segments: list[str], where: str, limits: Limits
) -> None:
    with pytest.raises(Hl7Error, match=where) as caught:
        _parse("\r".join([MSH, *segments]), limits)
    assert SECRET not in str(caught.value) and "5521" not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f"MSH|^~\\&|{SECRET}|H|E|H|20260315||ORU^R01|C|P|2.9", r"MSH-12: HL7 version"),
        (f"MSH|^~\\&|{SECRET}|H|E|H|20260315||ORU^R03|C|P|2.5", r"MSH-9: message type"),
        ("MSH|^^\\&|A|H|E|H|20260315||ORU^R01|C|P|2.5", r"MSH-2: invalid encoding"),
        (f"PID|1||{SECRET}", r"does not start with MSH"),
        ("", r"no MSH segment"),
    ],
)
def test_malformed_header(text: str, where: str, limits: Limits) -> None:
    with pytest.raises(Hl7Error, match=where) as caught:
        _parse(text, limits)
    assert SECRET not in str(caught.value)


def test_malformed_fixture_and_batch_position(limits: Limits) -> None:
    with pytest.raises(Hl7Error, match="OBX-5") as caught:
        _fixture("malformed-obx-value.hl7", limits)
    assert "SECRET" not in str(caught.value)
    batch = (HL7 / "batch-fhs-bhs.hl7").read_text().replace("|70|", f"|{SECRET}|")
    with pytest.raises(Hl7Error, match=r"message #2 in batch: segment OBX #4, field OBX-5"):
        _parse(batch, limits)


def test_latin1_and_newline_separated_input(limits: Limits) -> None:
    text = MSH + "||||||8859/1\nPID|1||1^^^H^MR||M\xfcller^J||19700101|F\n"
    [record] = parse_records(text.encode("latin-1"), RecordFormat.hl7v2, limits=limits)
    assert record.patient is not None and record.patient["name"][0]["family"] == "M\xfcller"
    with pytest.raises(Hl7Error, match="not valid in the character set MSH-18 names"):
        parse_records(MSH.encode() + b"\rPID|1||1||M\xfcller", RecordFormat.hl7v2, limits=limits)


@pytest.mark.parametrize(
    ("charset", "family"),
    [
        ("8859/15", "M\u20acller"),  # the euro sign, where 8859/1 has the currency sign
        ("8859/2", "\u0141ukasz"),
        ("UNICODE UTF-8~8859/1", "M\xfcller"),  # the first repetition is the message's
        ("KS X 1001", "\uae40"),
    ],
)
def test_the_character_set_msh_18_names(limits: Limits, charset: str, family: str) -> None:
    codec = {"8859/15": "iso8859-15", "8859/2": "iso8859-2", "KS X 1001": "euc_kr"}
    text = f"{MSH}||||||{charset}\rPID|1||1^^^H^MR||{family}^J||19700101|F\r"
    body = text.encode(codec.get(charset, "utf-8"))
    [record] = parse_records(body, RecordFormat.hl7v2, limits=limits)
    assert record.patient is not None and record.patient["name"][0]["family"] == family


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (f"{MSH}||||||ISO IR87\rPID|1||1^^^H^MR", "names a character set the agent does not"),
        (f"{MSH}||||||UNICODE UTF-16\rPID|1||1^^^H^MR", "names a character set the agent"),
        (
            f"FHS|^~\\&\rBHS|^~\\&\r{MSH}||||||8859/1\rPID|1||1^^^H^MR\r{MSH}\rPID|1||2^^^H^MR",
            "the messages of this batch name different MSH-18 character sets",
        ),
    ],
)
def test_a_character_set_not_read_is_refused(limits: Limits, body: str, problem: str) -> None:
    with pytest.raises(Hl7Error, match=problem):
        parse_records(body.encode(), RecordFormat.hl7v2, limits=limits)
