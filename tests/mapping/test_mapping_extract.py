"""Extraction: reductions and windows, missing and unseen policies, units a record carries,
panels, statuses, FHIRPath, patient fields, provenance, and speed; and raw rows read under
the same rules (``SiteMapping.read``)."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from mapping_builders import AS_OF, FHIR, LOINC, MAPPINGS, UCUM

from agent.bundle.manifest import BundleManifest
from agent.errors import (
    ImplausibleValue,
    MissingValue,
    TooMuchImputed,
    UnmappableRecord,
    UnseenCategory,
)
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.records import parse_records
from agent.types import PatientRecord, RecordFormat

# Everything imputable, so that a test can look at one feature alone.
BASE: dict[str, dict[str, Any]] = {
    "heart_rate": {"codes": ["loinc|8867-4"], "window": "24h", "missing": "median"},
    "respiratory_rate": {"codes": ["loinc|9279-1"], "missing": "median"},
    "body_temperature": {"codes": ["loinc|8310-5"], "unit": "Cel", "missing": "median"},
    "systolic_bp": {"codes": ["loinc|8480-6"], "panel": ["loinc|85354-9"], "missing": "median"},
    "spo2": {"codes": ["loinc|59408-5"], "missing": "median"},
    "wbc": {"codes": ["loinc|6690-2"], "unit": "10*3/uL", "missing": "median"},
    "creatinine": {
        "codes": ["loinc|14682-9", "loinc|2160-0"],
        "molar_mass": 113.12,
        "missing": "median",
    },
    "age": {"patient": "age", "missing": "median"},
    "sex": {
        "patient": "gender",
        "categories": {"female": "female", "male": "male"},
        "missing": "median",
        "unseen": "missing",
    },
}


def _mapping(
    tmp_path: Path,
    manifest: BundleManifest,
    top: dict[str, Any] | None = None,
    **changes: dict[str, Any],
) -> SiteMapping:
    features = {name: {**spec, **changes.get(name, {})} for name, spec in BASE.items()}
    for name, spec in changes.items():
        if "replace" in spec:
            features[name] = spec["replace"]
    path = tmp_path / "m.yaml"
    # a budget as large as the model: these tests look at one feature at a time
    top = {"max_imputed": 9, **(top or {})}
    path.write_text(
        yaml.safe_dump({"site": "t", "model": "deterioration", "features": features, **top})
    )
    return load_mapping(path, manifest)


def _obs(
    code: str,
    value: float | None,
    unit: str | None = "/min",
    hours: float | None = 1.0,
    **extra: Any,
) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
    }
    if hours is not None:
        observation["effectiveDateTime"] = _iso(hours)
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity.update(unit=unit, system=UCUM, code=unit)
        observation["valueQuantity"] = quantity
    observation.update(extra)
    return observation


def _iso(hours: float) -> str:
    return (AS_OF - timedelta(hours=hours)).isoformat()


def _record(*observations: dict[str, Any], patient: dict[str, Any] | None = None) -> PatientRecord:
    if patient is None:
        patient = {"resourceType": "Patient", "birthDate": "1954-07-22", "gender": "female"}
    return PatientRecord(patient=patient, observations=observations)


def _feature(mapping: SiteMapping, record: PatientRecord, name: str) -> Any:
    vector = mapping.extract(record, AS_OF)
    return vector.features[mapping.feature_names().index(name)], vector


HEART = [(30, 70.0), (20, 80.0), (10, 90.0), (2, 100.0), (-1, 500.0)]  # -1: after as-of


@pytest.mark.parametrize(
    ("reduce", "expected", "count"),
    [
        ("latest", 100.0, 3),
        ("first", 80.0, 3),
        ("mean", 90.0, 3),
        ("min", 80.0, 3),
        ("max", 100.0, 3),
        ("count", 3.0, 3),
    ],
)
def test_reductions_within_the_window(
    reduce: str, expected: float, count: int, tmp_path: Path, manifest: BundleManifest
) -> None:
    # a count of heart rates is no heart rate: flag rather than refuse its range
    mapping = _mapping(tmp_path, manifest, heart_rate={"reduce": reduce, "out_of_range": "flag"})
    record = _record(*[_obs("8867-4", v, hours=h) for h, v in HEART])
    value, vector = _feature(mapping, record, "heart_rate")
    assert value.value == expected
    assert value.source == f"Observation {LOINC}|8867-4 ({reduce} of {count})"
    assert not value.imputed
    assert not [w for w in vector.warnings if w.startswith("heart_rate") and reduce != "count"]


@pytest.mark.parametrize(
    ("window", "expected"), [("90min", 100.0), ("11h", 95.0), ("2d", 85.0), (None, 85.0)]
)
def test_window_lengths(
    window: str | None, expected: float, tmp_path: Path, manifest: BundleManifest
) -> None:
    mapping = _mapping(tmp_path, manifest, heart_rate={"reduce": "mean", "window": window})
    record = _record(*[_obs("8867-4", v, hours=h) for h, v in HEART])
    if window == "90min":
        assert _feature(mapping, record, "heart_rate")[0].imputed  # nothing in the last 90'
        return
    assert _feature(mapping, record, "heart_rate")[0].value == expected


def test_untimed_values_count_only_without_a_window(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    record = _record(_obs("8867-4", 77.0, hours=None))
    windowed = _mapping(tmp_path, manifest)
    assert _feature(windowed, record, "heart_rate")[0].imputed
    open_ended = _mapping(tmp_path, manifest, heart_rate={"window": None})
    assert _feature(open_ended, record, "heart_rate")[0].value == 77.0


def test_missing_policies(tmp_path: Path, manifest: BundleManifest) -> None:
    empty = _record()
    median, vector = _feature(_mapping(tmp_path, manifest), empty, "heart_rate")
    assert (median.value, median.imputed, median.source) == (84.0, True, "imputed training median")
    assert "heart_rate: missing, imputed training median" in vector.warnings
    constant, _ = _feature(
        _mapping(tmp_path, manifest, heart_rate={"missing": "constant", "constant": 70}),
        empty,
        "heart_rate",
    )
    assert (constant.value, constant.imputed, constant.source) == (70.0, True, "imputed constant")
    refusing = _mapping(tmp_path, manifest, heart_rate={"missing": "refuse"})
    with pytest.raises(UnmappableRecord, match="feature 'heart_rate': no value"):
        refusing.extract(empty, AS_OF)


def test_categories_unseen_and_missing(tmp_path: Path, manifest: BundleManifest) -> None:
    mapping = _mapping(tmp_path, manifest)
    male = _record(patient={"resourceType": "Patient", "gender": "male"})
    assert _feature(mapping, male, "sex")[0].value == 1.0
    other = _record(patient={"resourceType": "Patient", "gender": "other"})
    value, vector = _feature(mapping, other, "sex")
    assert (value.value, value.display, value.unseen_category, value.imputed) == (
        1.0,
        "male",
        True,
        True,
    )  # most frequent training level
    assert (
        "sex: category not among the mapped levels, imputed most frequent training level"
        in vector.warnings
    )
    refusing = _mapping(tmp_path, manifest, sex={"unseen": "refuse"})
    with pytest.raises(UnmappableRecord, match=r"feature 'sex': Patient\.gender carries a cat"):
        refusing.extract(other, AS_OF)
    constant = _mapping(tmp_path, manifest, sex={"missing": "constant", "constant": "female"})
    assert _feature(constant, _record(patient={"resourceType": "Patient"}), "sex")[0].value == 0


def test_out_of_range_is_refused_by_default_naming_feature_range_and_unit(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    with pytest.raises(ImplausibleValue) as caught:
        _mapping(tmp_path, manifest).extract(_record(_obs("8867-4", 400.0)), AS_OF)
    assert caught.value.reason == "out_of_range" and caught.value.feature == "heart_rate"
    assert str(caught.value) == (
        "feature 'heart_rate': value outside the plausible range [20, 250] /min "
        "(a wrong unit or a typo?); the mapping says refuse"
    )
    assert "400" not in str(caught.value)


def test_out_of_range_flag_scores_as_read_and_clip_to_the_bound(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    flagged = _mapping(tmp_path, manifest, heart_rate={"out_of_range": "flag"})
    value, vector = _feature(flagged, _record(_obs("8867-4", 400.0)), "heart_rate")
    assert value.out_of_range and value.value == 400.0
    assert "heart_rate: value outside the model's range" in vector.warnings
    clipped = _mapping(tmp_path, manifest, heart_rate={"out_of_range": "clip"})
    value, _ = _feature(clipped, _record(_obs("8867-4", 400.0)), "heart_rate")
    assert value.out_of_range and value.value == 250.0


def test_mapping_range_narrows_the_manifests(tmp_path: Path, manifest: BundleManifest) -> None:
    narrowed = _mapping(tmp_path, manifest, heart_rate={"range": [30, 200]})
    with pytest.raises(ImplausibleValue, match=r"range \[30, 200\] /min"):
        narrowed.extract(_record(_obs("8867-4", 220.0)), AS_OF)
    value, _ = _feature(_mapping(tmp_path, manifest), _record(_obs("8867-4", 220.0)), "heart_rate")
    assert value.value == 220.0 and not value.out_of_range


def test_imputation_budget_refuses_naming_the_imputed_features(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    default = _mapping(tmp_path, manifest, top={"max_imputed": None})
    assert default.max_imputed == 4  # half of the model's 9 features
    with pytest.raises(TooMuchImputed) as caught:
        default.extract(_record(_obs("8867-4", 80.0)), AS_OF)
    assert caught.value.reason == "too_much_imputed"
    assert str(caught.value).startswith("6 of 9 features would be imputed (respiratory_rate, ")
    assert _mapping(tmp_path, manifest, top={"max_imputed": 0.9}).max_imputed == 8


def test_record_unit_is_converted_from_what_it_carries(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    mapping = _mapping(tmp_path, manifest)
    value, _ = _feature(mapping, _record(_obs("8310-5", 101.48, "[degF]")), "body_temperature")
    assert value.value == pytest.approx(38.6) and value.conversion == "[degF] -> Cel"
    creatinine, _ = _feature(mapping, _record(_obs("2160-0", 1.493184, "mg/dL")), "creatinine")
    assert creatinine.value == pytest.approx(132.0, rel=1e-6)
    assert creatinine.conversion == "mg/dL -> umol/L (molar mass 113.12 g/mol)"
    # no unit at all: the mapping's unit is assumed
    bare, _ = _feature(mapping, _record(_obs("8310-5", 38.6, None)), "body_temperature")
    assert bare.value == 38.6 and bare.conversion is None


@pytest.mark.parametrize("unit", ["Cel", "[degF]"])
def test_an_offset_unit_on_a_feature_with_a_molar_mass_is_refused(
    unit: str, tmp_path: Path, manifest: BundleManifest
) -> None:
    """A temperature unit on a creatinine value: pint's offset arithmetic against the molar
    mass raised an error of its own, an internal error, instead of this refusal."""
    with pytest.raises(UnmappableRecord) as caught:
        _mapping(tmp_path, manifest).extract(_record(_obs("2160-0", 1.49, unit)), AS_OF)
    assert caught.value.reason == "unit" and caught.value.feature == "creatinine"


@pytest.mark.parametrize("unit", ["kg", "SECRET-unit", "°F"])
def test_record_unit_that_cannot_be_read_is_refused(
    unit: str, tmp_path: Path, manifest: BundleManifest
) -> None:
    observation = _obs("8310-5", 38.6)
    observation["valueQuantity"] = {"value": 38.6, "unit": unit}  # text only, no UCUM code
    with pytest.raises(UnmappableRecord) as caught:
        _mapping(tmp_path, manifest).extract(_record(observation), AS_OF)
    named = "unit 'kg'" if unit == "kg" else "a unit text that is not UCUM"
    assert caught.value.reason == "unit"
    assert str(caught.value) == (
        f"feature 'body_temperature': Observation {LOINC}|8310-5 carries {named}, which "
        "cannot be converted to Cel; if it is the site's spelling of a UCUM unit, add it "
        "to unit_aliases"
    )


def test_unit_aliases_name_the_sites_unit_texts(tmp_path: Path, manifest: BundleManifest) -> None:
    observation = _obs("8480-6", 120.0)
    observation["valueQuantity"] = {"value": 120.0, "unit": "mmHg"}  # HL7 OBX-6 without UCUM
    with pytest.raises(UnmappableRecord, match="add it to unit_aliases"):
        _mapping(tmp_path, manifest).extract(_record(observation), AS_OF)
    aliased = _mapping(tmp_path, manifest, top={"unit_aliases": {"mmHg": "mm[Hg]"}})
    value, _ = _feature(aliased, _record(observation), "systolic_bp")
    assert value.value == 120.0 and not value.imputed
    fahrenheit = _obs("8310-5", 101.48)
    fahrenheit["valueQuantity"] = {"value": 101.48, "unit": "°F"}
    aliased = _mapping(tmp_path, manifest, top={"unit_aliases": {"°F": "[degF]"}})
    assert _feature(aliased, _record(fahrenheit), "body_temperature")[0].value == pytest.approx(
        38.6
    )


def test_void_statuses_and_values_without_value_are_skipped(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    record = _record(
        _obs("8867-4", 90.0, hours=3),
        _obs("8867-4", 300.0, hours=1, status="entered-in-error"),
        _obs("8867-4", None, hours=0.5),
    )
    assert _feature(_mapping(tmp_path, manifest), record, "heart_rate")[0].value == 90.0


def test_panel_components(tmp_path: Path, manifest: BundleManifest) -> None:
    panel = _obs(
        "85354-9",
        None,
        hours=1,
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": {"value": 101, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
            }
        ],
    )
    other_panel = _obs("99999-9", None, hours=0.5, component=panel["component"])
    alone = _obs("8480-6", 120.0, "mm[Hg]", hours=2)
    mapping = _mapping(tmp_path, manifest, systolic_bp={"reduce": "count", "out_of_range": "flag"})
    value, _ = _feature(mapping, _record(panel, other_panel, alone), "systolic_bp")
    assert value.value == 2.0  # the foreign panel's component does not count
    latest, _ = _feature(_mapping(tmp_path, manifest), _record(panel, alone), "systolic_bp")
    assert latest.value == 101.0
    assert latest.source == f"Observation {LOINC}|8480-6 (latest of 2)"
    only, _ = _feature(_mapping(tmp_path, manifest), _record(panel), "systolic_bp")
    assert only.source == f"Observation component {LOINC}|8480-6 (latest of 1)"


def test_fhirpath_with_and_without_codes(tmp_path: Path, manifest: BundleManifest) -> None:
    oral = _obs("8310-5", 37.0, "Cel", hours=2, method={"text": "oral"})
    rectal = _obs("8310-5", 38.0, "Cel", hours=1, method={"text": "rectal"})
    narrowed = _mapping(
        tmp_path,
        manifest,
        body_temperature={"fhirpath": "Observation.where(method.text = 'oral').value"},
    )
    assert _feature(narrowed, _record(oral, rectal), "body_temperature")[0].value == 37.0
    free = _mapping(
        tmp_path,
        manifest,
        heart_rate={
            "replace": {
                "fhirpath": "Observation.where(code.coding.code = '8867-4').value.value",
                "missing": "median",
            }
        },
    )
    value, _ = _feature(free, _record(_obs("8867-4", 88.0)), "heart_rate")
    assert value.value == 88.0 and value.source == "Observation fhirpath (latest of 1)"


def test_age_from_birth_date_at_as_of(tmp_path: Path, manifest: BundleManifest) -> None:
    mapping = _mapping(tmp_path, manifest, age={"missing": "refuse"})
    for birth, years in (("1954-03-15", 72.0), ("1954-03-16", 71.0), ("1954-02", 72.0)):
        patient = {"resourceType": "Patient", "birthDate": birth, "gender": "male"}
        assert _feature(mapping, _record(patient=patient), "age")[0].value == years
    for birth in ("1954", "1954-03"):  # born before or after 15 March: 72 or 71
        patient = {"resourceType": "Patient", "birthDate": birth, "gender": "male"}
        with pytest.raises(UnmappableRecord, match="gives only a year or a month"):
            mapping.extract(_record(patient=patient), AS_OF)
    with pytest.raises(UnmappableRecord, match="feature 'age'"):
        mapping.extract(PatientRecord(patient=None, observations=()), AS_OF)


def test_naive_as_of_is_utc(tmp_path: Path, manifest: BundleManifest) -> None:
    mapping = _mapping(tmp_path, manifest)
    record = _record(*[_obs("8867-4", v, hours=h) for h, v in HEART])
    assert mapping.extract(record, AS_OF.replace(tzinfo=None)) == mapping.extract(record, AS_OF)


def test_demo_fixture_vector(manifest: BundleManifest) -> None:
    mapping = load_mapping(MAPPINGS / "demo-site.yaml", manifest)
    [record] = parse_records(
        (FHIR / "demo-patient-bundle.json").read_bytes(), RecordFormat.fhir_json, limits=Limits()
    )
    vector = mapping.extract(record, AS_OF)
    assert vector.values == (104.0, 24.0, 38.6, 98.0, 92.0, 14.2, 132.0, 71.0, 0.0)
    assert vector.warnings == ()
    assert vector.features[5].conversion == "10*3/uL -> 10*9/L"


def _censored(value: float, comparator: str, hours: float = 0.5) -> dict[str, Any]:
    """A heart rate of ``comparator value`` (``>95``)."""
    observation = _obs("8867-4", value, hours=hours)
    observation["valueQuantity"]["comparator"] = comparator
    return observation


@pytest.mark.parametrize(
    ("newest", "says"),
    [
        (_censored(95.0, ">"), "carries a value with a comparator (<, >)"),
        (_obs("8867-4", None, valueString="95"), "carries a text or coded value"),
        (_obs("8867-4", None, valueCodeableConcept={"text": "fast"}), "a text or coded value"),
        (_obs("8867-4", None, valueRange={"low": {"value": 90}}), "carries a range"),
        (_obs("8867-4", None, valueRatio={"numerator": {"value": 1}}), "carries a ratio"),
        (_obs("8867-4", None, valueDateTime=_iso(1)), "carries a date or time"),
        (
            _obs("8867-4", None, dataAbsentReason={"coding": [{"code": "unsupported"}]}),
            "a value of a kind the agent does not read",
        ),
        (_obs("8867-4", 120.0, hours=1.0), "has two different values at the time latest takes"),
    ],
    ids=["comparator", "string", "concept", "range", "ratio", "dateTime", "unsupported", "rival"],
)
def test_latest_refuses_a_newest_value_that_is_no_number(
    newest: dict[str, Any], says: str, tmp_path: Path, manifest: BundleManifest
) -> None:
    """Read as its bare number or skipped for the older 90 /min, any of these would score a
    value the record does not say; the patient is refused (``unmappable``) naming the
    feature, never the value."""
    mapping = _mapping(tmp_path, manifest)
    older = _obs("8867-4", 90.0, hours=1.0)  # newest: as new (the rival) or newer
    with pytest.raises(UnmappableRecord, match="feature 'heart_rate'") as caught:
        mapping.extract(_record(older, newest), AS_OF)
    assert says in str(caught.value) and "95" not in str(caught.value)
    assert caught.value.reason == "unmappable"


@pytest.mark.parametrize(
    "older",
    [
        _censored(95.0, ">", hours=2.0),
        _obs("8867-4", None, hours=2.0, valueString="95"),
        _obs("8867-4", None, hours=2.0, dataAbsentReason={"coding": [{"code": "error"}]}),
        _obs("8867-4", 120.0, hours=1.0, status="corrected"),
    ],
    ids=["older comparator", "older string", "no value", "a correction of the same time"],
)
def test_latest_reads_the_newest_number(
    older: dict[str, Any], tmp_path: Path, manifest: BundleManifest
) -> None:
    """What ``latest`` does not take is not refused; a correction supersedes the value of
    its time; an Observation with no value (``dataAbsentReason`` other than ``unsupported``)
    is not a value."""
    mapping = _mapping(tmp_path, manifest)
    newest = _obs("8867-4", 90.0, hours=1.0)
    corrects = older.get("status") == "corrected"
    record = _record(newest, older) if corrects else _record(older, newest)
    value, _ = _feature(mapping, record, "heart_rate")
    assert value.value == (120.0 if corrects else 90.0)


def test_mean_refuses_any_value_that_is_no_number(tmp_path: Path, manifest: BundleManifest) -> None:
    mapping = _mapping(tmp_path, manifest, heart_rate={"reduce": "mean"})
    record = _record(_obs("8867-4", 90.0), _censored(200.0, ">=", hours=3.0))
    with pytest.raises(UnmappableRecord, match="comparator"):
        mapping.extract(record, AS_OF)


def test_registered_observations_carry_no_result(tmp_path: Path, manifest: BundleManifest) -> None:
    mapping = _mapping(tmp_path, manifest)
    record = _record(_obs("8867-4", 90.0, hours=2.0), _obs("8867-4", 150.0, status="registered"))
    assert _feature(mapping, record, "heart_rate")[0].value == 90.0


def test_a_category_read_from_the_newest_value_only(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    """A categorical feature takes the newest value too: a number there is refused, not
    skipped for the older code."""
    sex = {"codes": ["loinc|76689-9"], "categories": {"F": "female", "M": "male"}}
    mapping = _mapping(tmp_path, manifest, sex={"replace": {**sex, "missing": "refuse"}})
    coded = _obs("76689-9", None, hours=2.0, valueCodeableConcept={"text": "M"})
    assert _feature(mapping, _record(coded), "sex")[0].display == "male"
    with pytest.raises(UnmappableRecord, match=r"feature 'sex': .* carries a number, not a"):
        mapping.extract(_record(coded, _obs("76689-9", 1.0, unit=None)), AS_OF)


# --- raw rows (OIP tensors, feature CSVs): the same rules through SiteMapping.read ----------
# heart_rate, respiratory_rate, body_temperature, systolic_bp, spo2, wbc, creatinine, age, sex
ROW = (88.0, 18.0, 37.0, 120.0, 97.0, 7.5, 80.0, 64.0, 1.0)


def _row(**changes: float) -> list[float]:
    names = list(BASE)
    row = list(ROW)
    for name, value in changes.items():
        row[names.index(name)] = value
    return row


def test_a_plausible_row_is_read_as_it_is(tmp_path: Path, manifest: BundleManifest) -> None:
    vector = _mapping(tmp_path, manifest).read(ROW)
    assert vector.values == ROW and vector.warnings == ()
    assert {f.source for f in vector.features} == {"feature vector"}
    assert vector.features[-1].display == "male"


def test_a_row_out_of_range_is_refused_as_the_record_is(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    mapping = _mapping(tmp_path, manifest)
    with pytest.raises(ImplausibleValue) as from_record:
        mapping.extract(_record(_obs("8867-4", 400.0)), AS_OF)
    with pytest.raises(ImplausibleValue) as from_row:
        mapping.read(_row(heart_rate=400.0))
    assert (from_row.value.feature, str(from_row.value)) == (
        from_record.value.feature,
        str(from_record.value),
    )
    assert "400" not in str(from_row.value)
    narrowed = _mapping(tmp_path, manifest, heart_rate={"range": [30, 200]})
    with pytest.raises(ImplausibleValue, match=r"range \[30, 200\] /min"):
        narrowed.read(_row(heart_rate=220.0))  # within the manifest's [20, 250]


def test_a_row_out_of_range_is_clipped_or_flagged_when_the_mapping_says_so(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    flagged = _mapping(tmp_path, manifest, heart_rate={"out_of_range": "flag"}).read(
        _row(heart_rate=400.0)
    )
    assert flagged.values[0] == 400.0 and flagged.features[0].out_of_range
    assert flagged.warnings == ("heart_rate: value outside the model's range",)
    clipped = _mapping(tmp_path, manifest, heart_rate={"out_of_range": "clip"}).read(
        _row(heart_rate=400.0)
    )
    assert clipped.values[0] == 250.0 and clipped.features[0].out_of_range


def test_nan_in_a_row_gets_the_features_missing_policy(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    vector = _mapping(tmp_path, manifest).read(_row(heart_rate=math.nan))
    value = vector.features[0]
    assert (value.value, value.imputed, value.source) == (84.0, True, "imputed training median")
    refusing = _mapping(tmp_path, manifest, heart_rate={"missing": "refuse"})
    with pytest.raises(MissingValue) as caught:
        refusing.read(_row(heart_rate=math.nan))
    assert caught.value.feature == "heart_rate"


def test_a_level_index_the_model_lacks_gets_the_unseen_policy(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    imputed = _mapping(tmp_path, manifest).read(_row(sex=2.0)).features[-1]
    assert (imputed.value, imputed.unseen_category, imputed.imputed) == (1.0, True, True)
    refusing = _mapping(tmp_path, manifest, sex={"unseen": "refuse"})
    for index in (2.0, -1.0, 0.5):
        with pytest.raises(UnseenCategory, match=r"not a level index of the model \(0 to 1\)"):
            refusing.read(_row(sex=index))


def test_a_row_has_the_imputation_budget_and_every_refusal_named_at_once(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    budget = _mapping(tmp_path, manifest, top={"max_imputed": 1})
    with pytest.raises(TooMuchImputed) as caught:
        budget.read(_row(wbc=math.nan, creatinine=math.nan))
    assert str(caught.value) == (
        "2 of 9 features would be imputed (wbc, creatinine); the model allows 1"
    )
    assert budget.read(_row(wbc=math.nan)).features[5].imputed
    with pytest.raises(ImplausibleValue) as both:
        _mapping(tmp_path, manifest).read(_row(heart_rate=400.0, body_temperature=100.4))
    assert both.value.feature == "heart_rate" and "'body_temperature'" in str(both.value)


def _systemless(observation: dict[str, Any], *codings: dict[str, str]) -> dict[str, Any]:
    observation["code"] = {"coding": list(codings)}
    return observation


def test_the_newest_value_coded_without_its_system_refuses_rather_than_an_older_one_answers(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    """A heart rate whose code lacks its coding system (FHIR Coding.system absent, HL7 OBX-3
    without OBX-3.3) may be the LOINC code or another system's of the same spelling. It was
    passed over, and ``latest`` took the older, properly coded value in silence."""
    mapping = _mapping(tmp_path, manifest)
    newest = _systemless(_obs("8867-4", 130.0, hours=1), {"code": "8867-4"})
    with pytest.raises(UnmappableRecord) as caught:
        mapping.extract(_record(_obs("8867-4", 80.0, hours=5), newest), AS_OF)
    assert caught.value.reason == "unmappable" and caught.value.feature == "heart_rate"
    assert str(caught.value) == (
        "feature 'heart_rate': Observation |8867-4 carries a code without its coding system,"
        " not a number"
    )


def test_a_value_coded_without_its_system_is_passed_over_where_it_would_not_be_taken(
    tmp_path: Path, manifest: BundleManifest
) -> None:
    mapping = _mapping(tmp_path, manifest)
    older = _systemless(_obs("8867-4", 130.0, hours=5), {"code": "8867-4"})
    value, _ = _feature(mapping, _record(older, _obs("8867-4", 80.0, hours=1)), "heart_rate")
    assert value.value == 80.0  # latest takes the newer, properly coded value
    both = _systemless(
        _obs("8867-4", 90.0, hours=1), {"code": "8867-4"}, {"system": LOINC, "code": "8867-4"}
    )
    value, _ = _feature(mapping, _record(both), "heart_rate")
    assert value.value == 90.0  # another coding of the same Observation names the system
    unrelated = _systemless(_obs("8867-4", 90.0, hours=1), {"code": "0000-0"})
    value, _ = _feature(mapping, _record(unrelated, _obs("8867-4", 70.0, hours=2)), "heart_rate")
    assert value.value == 70.0  # a code no feature reads in any system: nothing to doubt
