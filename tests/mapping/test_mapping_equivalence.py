"""Property: the same clinical facts give the same feature vector whichever way they arrive —
FHIR or HL7 v2, Celsius or Fahrenheit, umol/L or mg/dL (in the mapping or in the record),
LOINC or the site's local codes, one Bundle or NDJSON lines (one resource per line),
systolic pressure inside a panel or as its own OBX."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mapping_builders import (
    AS_OF,
    FHIR,
    HL7,
    MAPPINGS,
    Facts,
    fhir_bundle,
    fhir_ndjson,
    hl7_oru,
    manifest_document,
)
from mapping_builders import (
    LOCAL as LOCAL_SYSTEM,
)

from agent.bundle.manifest import BundleManifest
from agent.errors import UnmappableRecord
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.records import RecordsConfig, parse_records
from agent.types import FeatureVector, RecordFormat

MANIFEST = BundleManifest.model_validate(manifest_document())
DEMO = load_mapping(MAPPINGS / "demo-site.yaml", MANIFEST)
LOCAL = load_mapping(MAPPINGS / "local-site.yaml", MANIFEST)
LIMITS = Limits()
LOCAL_HL7 = RecordsConfig(hl7_coding_systems={"99OBS": LOCAL_SYSTEM})

# value ranges in tenths, in the model's units
RANGES = {
    "heart_rate": (300, 1800),
    "respiratory_rate": (60, 400),
    "body_temperature": (340, 420),
    "systolic_bp": (600, 2200),
    "spo2": (700, 1000),
    "wbc": (5, 400),
    "creatinine": (300, 9000),
}


@st.composite
def clinical_facts(draw: st.DrawFn) -> Facts:
    """One to four vital signs per feature at distinct minutes in the last 26 hours (the
    windows are 24 h: now and then all fall outside and the record is refused), and zero to
    three labs in the last 80 hours (72 h windows; none: imputed)."""
    facts = Facts(
        as_of=AS_OF,
        gender=draw(st.sampled_from(["female", "male"])),
        birth_date=draw(
            st.dates(
                min_value=AS_OF.date().replace(year=1920), max_value=AS_OF.date().replace(year=2000)
            )
        ).isoformat(),
    )
    for feature, (low, high) in RANGES.items():
        lab = feature in ("wbc", "creatinine")
        minutes = draw(
            st.lists(
                st.integers(1, (80 if lab else 26) * 60),
                min_size=0 if lab else 1,
                max_size=3 if lab else 4,
                unique=True,
            )
        )
        values = draw(
            st.lists(st.integers(low, high), min_size=len(minutes), max_size=len(minutes))
        )
        facts.values[feature] = [(m / 60, v / 10) for m, v in zip(minutes, values, strict=True)]
    return facts


def _outcome(
    mapping: SiteMapping, body: bytes, fmt: RecordFormat, config: RecordsConfig | None = None
) -> FeatureVector | str:
    [record] = parse_records(body, fmt, limits=LIMITS, config=config)
    try:
        return mapping.extract(record, AS_OF)
    except UnmappableRecord as exc:
        return str(exc)


def _same(a: FeatureVector | str, b: FeatureVector | str, exact: bool = True) -> None:
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    if exact:
        assert a.values == b.values
    else:
        assert a.values == pytest.approx(b.values, rel=1e-9, abs=1e-9)
    assert [f.imputed for f in a.features] == [f.imputed for f in b.features]
    assert len(a.warnings) == len(b.warnings)


WAYS: dict[str, Callable[[Facts], FeatureVector | str]] = {
    "hl7": lambda f: _outcome(DEMO, hl7_oru(f), RecordFormat.hl7v2),
    "ndjson": lambda f: _outcome(DEMO, fhir_ndjson(f), RecordFormat.fhir_ndjson),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=clinical_facts())
def test_fhir_bundle_hl7_and_ndjson_agree(facts: Facts) -> None:
    reference = _outcome(DEMO, fhir_bundle(facts), RecordFormat.fhir_json)
    for way in WAYS.values():
        _same(reference, way(facts))
    event("refused" if isinstance(reference, str) else "vector")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=clinical_facts())
def test_units_the_records_carry_are_converted(facts: Facts) -> None:
    """Fahrenheit and mg/dL in the records, Celsius and umol/L in the demo mapping."""
    reference = _outcome(DEMO, fhir_bundle(facts), RecordFormat.fhir_json)
    converted = _outcome(DEMO, fhir_bundle(facts, other_units=True), RecordFormat.fhir_json)
    _same(reference, converted, exact=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=clinical_facts())
def test_local_codes_and_units_agree_with_loinc(facts: Facts) -> None:
    """The local site's FHIR facade and its HL7 feed, through its own mapping."""
    reference = _outcome(DEMO, fhir_bundle(facts), RecordFormat.fhir_json)
    for local in (
        _outcome(LOCAL, fhir_bundle(facts, local=True), RecordFormat.fhir_json),
        _outcome(LOCAL, hl7_oru(facts, local=True), RecordFormat.hl7v2, LOCAL_HL7),
    ):
        _same(reference, local, exact=False)


def test_fixtures_agree() -> None:
    """The shipped fixtures carry the same facts in their three shapes."""
    demo = _outcome(DEMO, (FHIR / "demo-patient-bundle.json").read_bytes(), RecordFormat.fhir_json)
    _same(demo, _outcome(DEMO, (HL7 / "oru-r01-v25.hl7").read_bytes(), RecordFormat.hl7v2))
    _same(
        demo,
        _outcome(LOCAL, (FHIR / "local-site-bundle.json").read_bytes(), RecordFormat.fhir_json),
        exact=False,
    )
