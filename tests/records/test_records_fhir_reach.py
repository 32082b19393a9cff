"""The default validation (``essential``) checks every element a mapping's features can read,
FHIRPath included: an invalid value anywhere a feature can reach is refused, as the ``full``
mode refuses it; elements nothing reads pass."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.bundle.manifest import BundleManifest
from agent.errors import FhirError
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.mapping.fhirpath import reached_names
from agent.records import RecordsConfig, parse_records
from agent.records.config import FhirValidation
from agent.records.r4_structures import STRUCTURES
from agent.types import ElementReach, RecordFormat
from tests.mapping.mapping_builders import manifest_document
from tests.records.r4_structures_gen import structures

ROOT = Path(__file__).resolve().parents[2]
FHIR = ROOT / "fixtures" / "fhir"
FULL = RecordsConfig(fhir_validation=FhirValidation.full)
ESSENTIAL = RecordsConfig()
SECRET = "SECRET-7731"
LOCAL_BUNDLE: dict[str, Any] = json.loads((FHIR / "local-site-bundle.json").read_bytes())
ANYTHING = ElementReach(tuple((kind, None) for kind in ("Encounter", "Observation", "Patient")))

# A valid resource of each type the mappings read, to break one element at a time.
VALID: dict[str, dict[str, Any]] = {
    "Patient": {"resourceType": "Patient", "id": "p1", "gender": "female"},
    "Observation": {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-03-15T10:00:00Z",
        "valueQuantity": {"value": 80, "unit": "/min", "code": "/min"},
    },
    "Encounter": {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"code": "IMP"},
        "subject": {"reference": "Patient/p1"},
    },
}


def _parse(doc: Any, config: RecordsConfig, reach: ElementReach | None = None) -> None:
    parse_records(
        json.dumps(doc).encode(),
        RecordFormat.fhir_json,
        limits=Limits(),
        config=config,
        reach=reach,
    )


def _local_mapping() -> SiteMapping:
    manifest = BundleManifest.model_validate(manifest_document())
    return load_mapping(ROOT / "config" / "mappings" / "local-site.yaml", manifest)


def test_r4_structures_are_those_of_the_r4b_models() -> None:
    assert structures() == STRUCTURES


def test_reached_names_of_an_expression() -> None:
    names = reached_names("(Patient.extension.where(url = 'http://x/a|b').value).first()")
    assert names is not None and {"extension", "url", "value"} <= names
    assert "http" not in names  # string literals are not names
    for anything in ("Patient.descendants()", "Patient.children().value", "subject.resolve()"):
        assert reached_names(anything) is None


def test_the_local_site_mapping_reaches_the_patient_extension() -> None:
    reach = _local_mapping().reach
    patient = reach.of("Patient")
    assert patient is not None and {"extension", "value", "gender"} <= patient
    assert reach.of("Observation") == frozenset()  # its other features are codes


@pytest.mark.parametrize(
    ("extension", "where"),
    [
        ({"valueCode": "W  M"}, "extension[0].valueCode: value does not match"),
        ({"valueCode": 7}, "extension[0].valueCode: expected a string"),
        ({"valueCodeableConcept": {"coding": {"code": "W"}}}, "coding: expected an array"),
        (
            {"valueCodeableConcept": {"text": SECRET, "codin": []}},
            "valueCodeableConcept: holds an element not defined",
        ),
        ({"valueQuantity": {"value": "5"}}, "valueQuantity.value: expected a number"),
        ({"valueCode": "W", "valueString": "W"}, "extension[0].value[x]: more than one"),
        ({"valueCode": "W", "url": 7}, "extension[0].url: expected a string"),
        ({"valueCode": "W", "extension": {"url": "u"}}, "extension[0].extension: expected an"),
    ],
)
def test_an_invalid_value_the_fhirpath_feature_reads_is_refused(
    extension: dict[str, Any], where: str
) -> None:
    """local-site.yaml's ``sex`` reads ``Patient.extension.value`` through FHIRPath."""
    reach = _local_mapping().reach
    bundle = copy.deepcopy(LOCAL_BUNDLE)
    patient = bundle["entry"][0]["resource"]
    assert patient["resourceType"] == "Patient"
    patient["extension"][0] = {"url": patient["extension"][0]["url"], **extension}
    _parse(LOCAL_BUNDLE, ESSENTIAL, reach)  # the fixture itself is valid
    with pytest.raises(FhirError) as caught:
        _parse(bundle, ESSENTIAL, reach)
    assert where in str(caught.value)
    assert "Patient at Bundle.entry[0].resource." in str(caught.value)
    assert SECRET not in str(caught.value) and "W  M" not in str(caught.value)
    with pytest.raises(FhirError):
        _parse(bundle, FULL, reach)
    _parse(bundle, ESSENTIAL)  # no mapping reads the extension: nothing to check


def _breakages(resource_type: str) -> list[tuple[str, Any]]:
    """(element, an invalid value for it): the wrong JSON kind for its type and cardinality."""
    out = []
    for key, (kind, many, _, _) in STRUCTURES[resource_type].items():
        if kind == "Resource":
            continue
        wrong: Any = {"x": SECRET} if kind[0].islower() else SECRET
        out.append((key, [wrong] if many else wrong))
    return out


@pytest.mark.parametrize(
    ("resource_type", "key", "wrong"),
    [(kind, key, wrong) for kind in VALID for key, wrong in _breakages(kind)],
)
def test_every_element_is_refused_where_an_expression_can_reach_anything(
    resource_type: str, key: str, wrong: Any
) -> None:
    """Property over every element of Patient, Observation and Encounter: what the R4B models
    refuse, the default mode refuses once a feature can read the element."""
    resource = {**VALID[resource_type], key: wrong}
    for choice in (STRUCTURES[resource_type][key][3],):  # keep one element per choice
        if choice is not None:
            for other in list(resource):
                if other != key and STRUCTURES[resource_type].get(other, ("", 0, 0, ""))[3] == (
                    choice
                ):
                    del resource[other]
    _parse(VALID[resource_type], ESSENTIAL, ANYTHING)
    with pytest.raises(FhirError) as full:
        _parse(resource, FULL)
    with pytest.raises(FhirError) as essential:
        _parse(resource, ESSENTIAL, ANYTHING)
    assert f"resource.{key}" in str(essential.value)
    assert SECRET not in str(essential.value) and SECRET not in str(full.value)
    named = ElementReach(((resource_type, frozenset({key})),))
    with pytest.raises(FhirError):
        _parse(resource, ESSENTIAL, named)


def test_nested_datatypes_are_checked_whole_below_a_reached_element() -> None:
    patient = {
        **VALID["Patient"],
        "name": [{"family": "F", "period": {"start": "2026-02-30"}}],
        "contact": [{"telecom": [{"system": "phone", "rank": 0}]}],
    }
    reach = ElementReach((("Patient", frozenset({"name"})),))
    with pytest.raises(FhirError, match=r"name\[0\]\.period\.start: value does not match"):
        _parse(patient, ESSENTIAL, reach)
    del patient["name"]
    _parse(patient, ESSENTIAL, reach)  # contact is not reached
    with pytest.raises(FhirError, match=r"contact\[0\]\.telecom\[0\]\.rank: integer out"):
        _parse(patient, ESSENTIAL, ANYTHING)


def test_required_elements_and_primitive_extensions_below_a_reached_element() -> None:
    patient = {**VALID["Patient"], "extension": [{"valueCode": "W"}]}
    reach = ElementReach((("Patient", frozenset({"extension"})),))
    with pytest.raises(FhirError, match=r"extension\[0\]\.url: required element is missing"):
        _parse(patient, ESSENTIAL, reach)
    patient = {**VALID["Patient"], "_gender": {"extension": [{"url": "u", "valueCode": " "}]}}
    with pytest.raises(FhirError, match=r"_gender\.extension\[0\]\.valueCode"):
        _parse(patient, ESSENTIAL, ElementReach((("Patient", frozenset({"gender"})),)))
    _parse(
        {**VALID["Patient"], "name": [{"given": ["A", None], "_given": [None, {"id": "g"}]}]},
        ESSENTIAL,
        ANYTHING,
    )


def test_contained_resources_are_validated_by_the_models_only_when_reached() -> None:
    patient = {
        **VALID["Patient"],
        "contained": [{"resourceType": "Organization", "id": "o", "active": SECRET}],
    }
    _parse(patient, ESSENTIAL, ElementReach((("Patient", frozenset({"name"})),)))
    with pytest.raises(FhirError, match=r"contained\[0\]") as caught:
        _parse(patient, ESSENTIAL, ANYTHING)
    assert SECRET not in str(caught.value)


def test_the_default_mode_imports_no_fhir_models_for_the_local_site_mapping() -> None:
    code = (
        "import sys\n"
        "from tests.records.test_records_fhir_reach import LOCAL_BUNDLE, ESSENTIAL, _parse,"
        " _local_mapping\n"
        "_parse(LOCAL_BUNDLE, ESSENTIAL, _local_mapping().reach)\n"
        "print(sorted(m for m in sys.modules if m.startswith('fhir.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
