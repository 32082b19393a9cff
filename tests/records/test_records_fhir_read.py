"""The default validation checks what the served mapping's features read, by code: a record
that whole-resource validation (``full``) refuses for an element a feature reads is refused
by the default mode too, naming the same place; an Observation coded with nothing the
mapping reads is checked only for what grouping and the code match read."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.bundle.manifest import BundleManifest
from agent.errors import FhirError
from agent.limits import Limits
from agent.mapping import load_mapping
from agent.records import RecordsConfig, parse_records
from agent.records.config import FhirValidation
from agent.types import ElementReach, PatientRecord, RecordFormat
from tests.mapping.mapping_builders import manifest_document

ROOT = Path(__file__).resolve().parents[2]
DEMO: dict[str, Any] = json.loads((ROOT / "fixtures/fhir/demo-patient-bundle.json").read_bytes())
FULL = RecordsConfig(fhir_validation=FhirValidation.full)
ESSENTIAL = RecordsConfig()
SECRET = "SECRET-7731"
HEART_RATE = 1  # entry 1: a heart rate (LOINC 8867-4), which the demo mapping reads
UNREAD_CODE = {"system": "http://loinc.org", "code": "8462-4"}  # diastolic: no feature


@pytest.fixture(scope="module")
def reach() -> ElementReach:
    manifest = BundleManifest.model_validate(manifest_document())
    found = load_mapping(ROOT / "config/mappings/demo-site.yaml", manifest).reach
    assert found.codes is not None and ("http://loinc.org", "8867-4") in found.codes
    assert ("http://loinc.org", "8462-4") not in found.codes
    return found


def _parse(doc: Any, config: RecordsConfig, reach: ElementReach | None) -> list[PatientRecord]:
    body = json.dumps(doc).encode()
    return parse_records(body, RecordFormat.fhir_json, limits=Limits(), config=config, reach=reach)


def _observation(bundle: dict[str, Any], index: int = HEART_RATE) -> dict[str, Any]:
    found: dict[str, Any] = bundle["entry"][index]["resource"]
    assert found["resourceType"] == "Observation"
    return found


def _panel(bundle: dict[str, Any]) -> dict[str, Any]:
    """The first blood pressure panel: the mapping reads its systolic component."""
    found: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if "component" in e["resource"]
    )
    return found


def _rename(element: dict[str, Any], old: str, new: str) -> None:
    element[new] = element.pop(old)


Breakage = Callable[[dict[str, Any]], None]

# (what to break in a Bundle, the element path the default mode's error must name)
_READ_BREAKAGES: list[tuple[str, Breakage, str]] = [
    (
        "valueQuantity.value a string",
        lambda b: _observation(b)["valueQuantity"].update(value="88"),
        "valueQuantity.value: expected a number",
    ),
    (
        "valueQuantity.value a boolean",
        lambda b: _observation(b)["valueQuantity"].update(value=True),
        "valueQuantity.value: expected a number",
    ),
    (
        "valueQuantity.value beyond a double",
        lambda b: _observation(b)["valueQuantity"].update(value=10**400),
        "valueQuantity.value",
    ),
    (
        "effectiveDateTime no such day",
        lambda b: _observation(b).update(effectiveDateTime="2026-02-30T10:00:00+00:00"),
        "effectiveDateTime: value does not match",
    ),
    (
        "effectiveDateTime without an offset",
        lambda b: _observation(b).update(effectiveDateTime="2026-03-14T14:00:00"),
        "effectiveDateTime: value does not match",
    ),
    (
        "effectiveDateTime offset past 14:00",
        lambda b: _observation(b).update(effectiveDateTime="2026-03-14T14:00:00+15:00"),
        "effectiveDateTime: value does not match",
    ),
    (
        "issued a date only",
        lambda b: _observation(b).update(issued="2026-03-14"),
        "issued: value does not match",
    ),
    (
        "code system not a string",
        lambda b: _observation(b)["code"]["coding"][0].update(system=7731),
        "code.coding[0].system: expected a string",
    ),
    (
        "valueQuantity.system not a uri",
        lambda b: _observation(b)["valueQuantity"].update(system="http://unitsof measure.org"),
        "valueQuantity.system: value does not match",
    ),
    (
        "valueQuantity.code with a double space",
        lambda b: _observation(b)["valueQuantity"].update(code="/  min"),
        "valueQuantity.code: value does not match",
    ),
    (
        "valueQuantity misspelt",
        lambda b: _rename(_observation(b), "valueQuantity", "valueQuantiti"),
        "resource: holds an element not defined",
    ),
    (
        "two effective[x]",
        lambda b: _observation(b).update(effectiveInstant="2026-03-14T14:00:00Z"),
        "effective[x]: more than one element of this choice",
    ),
    (
        "systolic component value a string",
        lambda b: _panel(b)["component"][0]["valueQuantity"].update(value="121"),
        "component[0].valueQuantity.value: expected a number",
    ),
]


@pytest.mark.parametrize(
    ("breakage", "where"), [pytest.param(b, w, id=n) for n, b, w in _READ_BREAKAGES]
)
def test_refused_by_full_for_an_element_a_feature_reads_is_refused_by_default(
    reach: ElementReach, breakage: Breakage, where: str
) -> None:
    bundle = copy.deepcopy(DEMO)
    breakage(bundle)
    with pytest.raises(FhirError):
        _parse(bundle, FULL, reach)
    with pytest.raises(FhirError) as caught:
        _parse(bundle, ESSENTIAL, reach)
    message = str(caught.value)
    assert message.startswith("Observation at Bundle.entry[") and where in message, message
    assert SECRET not in message and "7731" not in message


def _unread(bundle: dict[str, Any]) -> dict[str, Any]:
    """Entry 1 recoded to a code no feature reads."""
    observation = _observation(bundle)
    observation["code"] = {"coding": [dict(UNREAD_CODE)]}
    return observation


@pytest.mark.parametrize(
    "breakage",
    [
        lambda o: o["valueQuantity"].update(value=SECRET),
        lambda o: o.update(effectiveDateTime="2026-02-30T10:00:00+00:00"),
        lambda o: o.update(issued=SECRET),
        lambda o: o["valueQuantity"].update(code=f"{SECRET}  x"),
        lambda o: o.update(encounter=SECRET),
    ],
    ids=["value", "effective", "issued", "unit code", "encounter"],
)
def test_an_observation_no_feature_reads_is_checked_for_its_code_alone(
    reach: ElementReach, breakage: Callable[[dict[str, Any]], None]
) -> None:
    bundle = copy.deepcopy(DEMO)
    breakage(_unread(bundle))
    [record] = _parse(bundle, ESSENTIAL, reach)
    assert len(record.observations) == 30
    with pytest.raises(FhirError):
        _parse(bundle, FULL, reach)
    with pytest.raises(FhirError, match=r"Bundle\.entry\[1\]\.resource\."):
        _parse(bundle, ESSENTIAL, None)  # without the mapping's codes, every value is read


@pytest.mark.parametrize(
    ("breakage", "where"),
    [
        (lambda o: o.update(status=SECRET), "status: value is not an allowed code"),
        (lambda o: o["code"]["coding"][0].update(system=7731), "coding[0].system: expected"),
        (lambda o: o["code"]["coding"].append({"code": 7731}), "coding[1].code: expected"),
        (lambda o: o.update(subject={"reference": 7731}), "subject.reference: expected"),
        (lambda o: _rename(o, "subject", "subjekt"), "resource: holds an element not defined"),
        (lambda o: o.update(component=[{"valueString": SECRET}]), "component[0].code: required"),
    ],
    ids=["status", "code system", "code", "subject", "subject misspelt", "component code"],
)
def test_what_grouping_and_the_code_match_read_is_checked_on_every_observation(
    reach: ElementReach, breakage: Callable[[dict[str, Any]], None], where: str
) -> None:
    bundle = copy.deepcopy(DEMO)
    breakage(_unread(bundle))
    with pytest.raises(FhirError) as caught:
        _parse(bundle, ESSENTIAL, reach)
    assert "Observation at Bundle.entry[1].resource" in str(caught.value)
    assert where in str(caught.value) and SECRET not in str(caught.value)


def test_a_component_a_feature_reads_makes_its_panel_read(reach: ElementReach) -> None:
    """A panel coded with nothing the mapping reads is still read for its systolic
    component, so the component's value is checked."""
    bundle = copy.deepcopy(DEMO)
    panel = _panel(bundle)
    panel["code"] = {"coding": [dict(UNREAD_CODE)]}
    panel["component"][0]["valueQuantity"]["value"] = SECRET
    with pytest.raises(FhirError, match=r"component\[0\]\.valueQuantity\.value"):
        _parse(bundle, ESSENTIAL, reach)


def test_a_fhirpath_feature_over_every_observation_reads_them_all(tmp_path: Path) -> None:
    """A FHIRPath feature without codes reads every Observation: the mapping's reach then
    names no codes, and every Observation is checked in full."""
    text = (ROOT / "config/mappings/demo-site.yaml").read_text()
    edited = text.replace(
        "  wbc:\n    codes: [loinc|6690-2, loinc|26464-8]",
        "  wbc:\n    fhirpath: \"Observation.where(code.coding.code = '6690-2').value\"",
    )
    assert edited != text
    (tmp_path / "site.yaml").write_text(edited)
    manifest = BundleManifest.model_validate(manifest_document())
    found = load_mapping(tmp_path / "site.yaml", manifest).reach
    assert found.codes is None
    bundle = copy.deepcopy(DEMO)
    _unread(bundle)["valueQuantity"]["value"] = SECRET
    with pytest.raises(FhirError, match=r"entry\[1\]\.resource\.valueQuantity\.value"):
        _parse(bundle, ESSENTIAL, found)
