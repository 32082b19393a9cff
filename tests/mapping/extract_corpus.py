"""A corpus for the extraction golden test (``test_extract_golden.py``): every fixture record
and a few thousand seeded random records, under the demo and local site mappings and a
mapping that uses every feature option, at several as-of times, with each outcome written
down to the bit (values as ``float.hex``; a refusal as its class, reason, message and
feature; the survey; raw rows through ``SiteMapping.read``).

The records are built here as FHIR dictionaries, not parsed from text, so the golden file
pins mapping alone. The random ones aim at the edges: partial dates, values after the as-of
time or at its very moment, two values at one time, comparators, ranges, text and coded
values, unit texts and aliases, units that cannot be read, void statuses, panels and their
components, codings that are not what they should be.

``extract_golden_gen.py`` writes ``extract_golden.json`` from the tree it runs against.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mapping_builders import FHIR, HL7, LOCAL, LOCAL_SEX, LOINC, MAPPINGS, UCUM

from agent.bundle.manifest import BundleManifest
from agent.errors import UnmappableRecord
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.records import RecordsConfig, parse_records
from agent.types import FeatureValue, PatientRecord, RecordFormat

GOLDEN = Path(__file__).resolve().parent / "extract_golden.json"
SEED = 14
RANDOM_RECORDS = 600
AS_OF = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
AS_OFS = (
    AS_OF,
    AS_OF - timedelta(hours=20),
    datetime(2026, 3, 15, 0, 0, tzinfo=UTC),  # midnight: where dated-only values sit
    datetime(2026, 3, 16, 0, 0, tzinfo=UTC),
    datetime(2026, 3, 15, 12, 0),  # naive: read as UTC
)

# Every feature option once: reductions, no window, count, clip and flag, constants,
# FHIRPath with codes, on every Observation and on the Encounter, categories from codes.
EVERY_OPTION = """\
site: every-option
model: deterioration
systems: {obs: http://hospital.example.org/fhir/CodeSystem/observations}
unit_aliases: {"°F": "[degF]", mmHg: "mm[Hg]", bpm: /min}
max_imputed: 4
features:
  heart_rate: {codes: [loinc|8867-4, obs|VS-HF], reduce: mean, window: 24h,
               out_of_range: clip, missing: median}
  respiratory_rate: {codes: [loinc|9279-1], reduce: count, window: 12h, range: [0, 60]}
  body_temperature: {codes: [loinc|8310-5, obs|VS-TEMP], reduce: max, unit: Cel,
                     out_of_range: flag, missing: constant, constant: 37.0}
  systolic_bp: {codes: [loinc|8480-6, obs|VS-RR-SYS], panel: [loinc|85354-9, obs|VS-RR],
                reduce: min, range: [60, 200], out_of_range: clip, missing: median}
  spo2: {codes: [loinc|59408-5], fhirpath: "Observation.where(status != 'preliminary').value",
         reduce: first, window: 48h, missing: median}
  wbc: {fhirpath: "Observation.where(code.coding.code = '6690-2').value", window: 72h,
        unit: 10*3/uL, missing: median}
  creatinine: {codes: [loinc|14682-9, loinc|2160-0, obs|LAB-KREA], unit: umol/L,
               molar_mass: 113.12, reduce: latest, out_of_range: flag, missing: median}
  age: {fhirpath: "Encounter.length.value", resource: Encounter, reduce: max,
        missing: constant, constant: 50}
  sex: {codes: [loinc|76689-9, obs|SEX], reduce: first, window: 72h,
        categories: {F: female, M: male, "true": male, female: female}, unseen: missing,
        missing: median}
"""

_FEATURE_CODES = [
    (LOINC, "8867-4"),
    (LOINC, "9279-1"),
    (LOINC, "8310-5"),
    (LOINC, "8331-1"),
    (LOINC, "8480-6"),
    (LOINC, "59408-5"),
    (LOINC, "2708-6"),
    (LOINC, "6690-2"),
    (LOINC, "26464-8"),
    (LOINC, "14682-9"),
    (LOINC, "2160-0"),
    (LOINC, "76689-9"),
    (LOCAL, "VS-HF"),
    (LOCAL, "VS-AF"),
    (LOCAL, "VS-TEMP"),
    (LOCAL, "VS-RR-SYS"),
    (LOCAL, "VS-SPO2"),
    (LOCAL, "LAB-LEUKO"),
    (LOCAL, "LAB-KREA"),
    (LOCAL, "SEX"),
    (LOINC, "0000-0"),  # read by no feature
]
_PANELS = [(LOINC, "85354-9"), (LOINC, "55284-4"), (LOCAL, "VS-RR"), (LOINC, "8716-3")]
_UNITS = ["/min", "Cel", "[degF]", "mm[Hg]", "%", "10*3/uL", "10*9/L", "umol/L", "mg/dL",
          "mmol/L", "kg", "1", "{beats}/min", "a", "g/L"]  # fmt: skip
_UNIT_TEXTS = ["°F", "mmHg", "bpm", "beats per minute", "mg/dl", ""]
_STATUSES = ["final"] * 8 + ["amended", "corrected", "preliminary", "entered-in-error",
                             "cancelled", "registered"]  # fmt: skip
_LABELS = ["F", "M", "female", "male", "X", "W", "true"]


def _when(rng: random.Random, as_of: datetime) -> dict[str, Any]:
    """An Observation's time element: mostly a moment near the as-of time (a few shared
    minutes, so that values meet), now and then dated only to a period, or odd."""
    moment = as_of - timedelta(hours=rng.choice([0, 0.5, 1, 3, 11.5, 12, 23, 24, 25, 47, 71,
                                                 73, 100, -1, -0.25, 6, 12]))  # fmt: skip
    kind = rng.random()
    if kind < 0.55:
        return {"effectiveDateTime": moment.isoformat()}
    if kind < 0.62:
        return {"effectiveDateTime": moment.strftime("%Y-%m-%dT%H:%M:%S")}  # no offset
    if kind < 0.70:
        return {"effectiveDateTime": moment.date().isoformat()}
    if kind < 0.74:
        return {"effectiveDateTime": rng.choice([moment.strftime("%Y-%m"), str(moment.year)])}
    if kind < 0.78:
        return {"effectiveInstant": moment.isoformat()}
    if kind < 0.84:
        period = {"start": (moment - timedelta(hours=2)).isoformat()}
        if rng.random() < 0.6:
            period["end"] = moment.isoformat()
        return {"effectivePeriod": period}
    if kind < 0.90:
        return {"issued": moment.isoformat()}
    if kind < 0.94:
        return {"effectiveDateTime": rng.choice(["not a date", "2026-13-45", "20", 2026])}
    return {}


def _quantity(rng: random.Random) -> dict[str, Any]:
    number: Any = rng.choice([rng.uniform(-5, 300), rng.randint(0, 200), 0.0, -0.0, 36.6,
                              98.6, 1.2, 0.9, 120, 1e9])  # fmt: skip
    quantity: dict[str, Any] = {"value": number}
    form = rng.random()
    if form < 0.6:
        unit = rng.choice(_UNITS)
        quantity.update(system=UCUM, code=unit, unit=unit)
    elif form < 0.7:
        quantity.update(code=rng.choice(_UNITS))  # no system: UCUM
    elif form < 0.85:
        quantity.update(unit=rng.choice(_UNIT_TEXTS))  # a text only
    elif form < 0.9:
        quantity.update(system="http://example.org/units", code="x", unit=rng.choice(_UNITS))
    if rng.random() < 0.05:
        quantity["comparator"] = rng.choice(["<", ">="])
    if rng.random() < 0.02:
        quantity["value"] = rng.choice([True, "12", None])
    return quantity


def _value(rng: random.Random) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.62:
        return {"valueQuantity": _quantity(rng)}
    if kind < 0.67:
        return {"valueInteger": rng.choice([0, 7, 120, True])}
    if kind < 0.74:
        coding = [{"system": LOCAL, "code": rng.choice(_LABELS)}]
        if rng.random() < 0.3:
            coding.append({"code": rng.choice(_LABELS)})
        concept: dict[str, Any] = {"coding": coding}
        if rng.random() < 0.4:
            concept["text"] = rng.choice(_LABELS)
        return {"valueCodeableConcept": concept}
    if kind < 0.78:
        return {"valueString": rng.choice([*_LABELS, "98.6"])}
    if kind < 0.81:
        return {"valueBoolean": rng.random() < 0.5}
    if kind < 0.83:
        return {"valueRange": {"low": {"value": 1}}}
    if kind < 0.84:
        return {"valueRatio": {"numerator": {"value": 1}}}
    if kind < 0.85:
        return {"valueDateTime": "2026-03-15"}
    if kind < 0.90:
        reason = rng.choice(["unsupported", "unknown", "asked-unknown"])
        return {"dataAbsentReason": {"coding": [{"code": reason}]}}
    return {}


def _concept(rng: random.Random, system: str, code: str) -> dict[str, Any]:
    coding: list[Any] = [{"system": system, "code": code}]
    odd = rng.random()
    if odd < 0.08:
        coding.insert(0, {"system": "http://snomed.info/sct", "code": "364075005"})
    elif odd < 0.1:
        coding.append({"system": system, "code": code})  # the same coding twice
    elif odd < 0.12:
        coding.append(rng.choice([{"code": code}, {"system": system}, "text", {"code": 5}]))
    elif odd < 0.14:
        coding.append({"system": LOINC, "code": rng.choice(_FEATURE_CODES)[1]})
    return {"coding": coding}


def _observation(rng: random.Random, as_of: datetime, n: int) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": rng.choice(_STATUSES),
        **_when(rng, as_of),
    }
    if rng.random() < 0.2:
        system, code = rng.choice(_PANELS)
        observation["code"] = _concept(rng, system, code)
        observation["component"] = [
            {"code": _concept(rng, *rng.choice(_FEATURE_CODES[:8] + _FEATURE_CODES[14:16])),
             **_value(rng)}
            for _ in range(rng.randint(1, 3))
        ]  # fmt: skip
        if rng.random() < 0.2:
            observation.update(_value(rng))
    else:
        system, code = rng.choice(_FEATURE_CODES)
        observation["code"] = _concept(rng, system, code)
        observation.update(_value(rng))
    return observation


def _patient(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.05:
        return None
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "p"}
    born = rng.choice(["1954-07-22", "1990-03-15", "1990-03-16", "1990-03", "1990", "2008-03-15",
                       "1900-01-01", "not a date", None])  # fmt: skip
    if born is not None:
        patient["birthDate"] = born
    gender = rng.choice(["female", "male", "other", "unknown", None, 3])
    if gender is not None:
        patient["gender"] = gender
    if rng.random() < 0.3:
        patient["extension"] = [{"url": LOCAL_SEX, "valueCode": rng.choice("WMDX")}]
    return patient


def _encounters(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Encounter",
            "status": "finished",
            "period": {"start": "2026-03-10T08:00:00Z", "end": rng.choice(["2026-03-14", None])},
            "length": {"value": rng.choice([30, 70, 120.5]), "unit": "d"},
        }
        for _ in range(rng.randint(0, 2))
    ]


# feature -> LOINC code, local code, units a site may send, plausible values in the first
_CLEAN = {
    "heart_rate": ("8867-4", "VS-HF", ["/min"], (30, 200)),
    "respiratory_rate": ("9279-1", "VS-AF", ["/min"], (6, 40)),
    "body_temperature": ("8310-5", "VS-TEMP", ["Cel", "[degF]"], (35, 41)),
    "systolic_bp": ("8480-6", "VS-RR-SYS", ["mm[Hg]"], (70, 220)),
    "spo2": ("59408-5", "VS-SPO2", ["%"], (80, 100)),
    "wbc": ("6690-2", "LAB-LEUKO", ["10*3/uL", "10*9/L"], (1, 30)),
    "creatinine": ("14682-9", "LAB-KREA", ["umol/L", "mg/dL"], (40, 400)),
}


def _clean(rng: random.Random, as_of: datetime, local: bool) -> list[dict[str, Any]]:
    """A plausible record's values: each vital sign one to three times in the last day,
    systolic pressure in a panel or alone, labs now and then."""
    out: list[dict[str, Any]] = []
    for feature, (loinc, local_code, units, (low, high)) in _CLEAN.items():
        system, code = (LOCAL, local_code) if local else (LOINC, loinc)
        for _ in range(rng.choice([0, 1, 1, 2, 3]) if feature in ("wbc", "creatinine")
                       else rng.choice([1, 1, 2, 3, 0])):  # fmt: skip
            unit = rng.choice(units)
            number = round(rng.uniform(low, high), rng.choice([0, 1, 2]))
            if unit == "[degF]":
                number = round(number * 9 / 5 + 32, 1)
            elif unit == "mg/dL":
                number = round(number * 113.12 / 10000, 2)
            value = {"value": number, "system": UCUM, "code": unit, "unit": unit}
            moment = as_of - timedelta(minutes=rng.choice([5, 30, 60, 240, 600, 1300, 2000]))
            observation: dict[str, Any] = {
                "resourceType": "Observation",
                "status": "final",
                "effectiveDateTime": moment.isoformat(),
            }
            if feature == "systolic_bp" and rng.random() < 0.5:
                observation["code"] = {
                    "coding": [{"system": system, "code": _PANELS[2 if local else 0][1]}]
                }
                observation["component"] = [
                    {"code": {"coding": [{"system": system, "code": code}]}, "valueQuantity": value}
                ]
            else:
                observation["code"] = {"coding": [{"system": system, "code": code}]}
                observation["valueQuantity"] = value
            out.append(observation)
    return out


def random_records() -> Iterator[tuple[str, PatientRecord, datetime]]:
    """``RANDOM_RECORDS`` seeded records, each with the as-of time it is scored at: most
    plausible with a few odd values among them, the rest odd values only."""
    rng = random.Random(SEED)
    for n in range(RANDOM_RECORDS):
        as_of = AS_OFS[n % len(AS_OFS)]
        aware = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        plausible = rng.random() < 0.7
        observations = _clean(rng, aware, rng.random() < 0.4) if plausible else []
        odd = rng.randint(0, 4) if plausible else rng.randint(0, 30)
        observations += [_observation(rng, aware, i) for i in range(odd)]
        rng.shuffle(observations)
        if observations and rng.random() < 0.3:  # two values at one time
            twin = json.loads(json.dumps(rng.choice(observations)))
            if twin.get("valueQuantity") and rng.random() < 0.7:
                twin["valueQuantity"]["value"] = 99
            observations.append(twin)
        record = PatientRecord(
            patient=_patient(rng), observations=observations, encounters=_encounters(rng)
        )
        yield f"random-{n}", record, as_of


def fixture_records() -> Iterator[tuple[str, PatientRecord]]:
    """Every record of the FHIR and HL7 v2 fixtures that parses (local codes read too)."""
    limits = Limits()
    config = RecordsConfig(hl7_coding_systems={"99OBS": LOCAL})
    formats = {".json": RecordFormat.fhir_json, ".ndjson": RecordFormat.fhir_ndjson,
               ".hl7": RecordFormat.hl7v2}  # fmt: skip
    root = FHIR.parent
    paths = sorted([*FHIR.rglob("*"), *HL7.rglob("*"), *(root / "external").rglob("*")])
    for path in paths:
        if path.suffix not in formats:
            continue
        try:
            records = parse_records(
                path.read_bytes(), formats[path.suffix], config=config, limits=limits
            )
        except Exception:  # a fixture of a refused input: nothing to map
            continue
        for i, record in enumerate(records):
            yield f"{path.relative_to(root)}#{i}", record


def mappings(manifest: BundleManifest, scratch: Path) -> dict[str, SiteMapping]:
    (scratch / "every-option.yaml").write_text(EVERY_OPTION, encoding="utf-8")
    return {
        "demo": load_mapping(MAPPINGS / "demo-site.yaml", manifest),
        "local": load_mapping(MAPPINGS / "local-site.yaml", manifest),
        "every": load_mapping(scratch / "every-option.yaml", manifest),
    }


def _number(value: Any) -> Any:
    return value.hex() if isinstance(value, float) else value


def _feature(value: FeatureValue) -> list[Any]:
    return [
        value.name,
        _number(value.value),
        _number(value.display),
        value.source,
        value.unit,
        value.conversion,
        value.imputed,
        value.out_of_range,
        value.unseen_category,
    ]


def _refusal(exc: Exception) -> list[Any]:
    if isinstance(exc, UnmappableRecord):
        return [type(exc).__name__, exc.reason, str(exc), exc.feature]
    return [type(exc).__name__]


def outcome(mapping: SiteMapping, record: PatientRecord, as_of: datetime) -> list[Any]:
    """What ``extract`` and ``survey`` make of ``record``, to the bit."""
    try:
        vector = mapping.extract(record, as_of)
    except Exception as exc:  # a refusal, or whatever the tree raises: both are pinned
        extracted: Any = {"refused": _refusal(exc)}
    else:
        extracted = {
            "values": [v.hex() for v in vector.values],
            "features": [_feature(f) for f in vector.features],
            "warnings": list(vector.warnings),
        }
    try:
        survey: Any = [
            [
                s.name,
                s.found,
                s.outcome,
                s.converted,
                s.out_of_range,
                _number(s.hours_beyond_window),
            ]
            for s in mapping.survey(record, as_of)
        ]
    except Exception as exc:
        survey = {"refused": _refusal(exc)}
    return [extracted, survey]


def raw_rows() -> Iterator[list[float]]:
    """Rows for ``SiteMapping.read``: plausible, missing, out of range, unknown levels."""
    rng = random.Random(SEED + 1)
    for _ in range(200):
        yield [
            rng.choice([math.nan, rng.uniform(-10, 300), 0.0, 1.0, 2.0, 0.5, 60.0, 37.2])
            for _ in range(9)
        ]


def read_outcome(mapping: SiteMapping, row: list[float]) -> Any:
    try:
        vector = mapping.read(row)
    except Exception as exc:
        return {"refused": _refusal(exc)}
    return [[v.hex() for v in vector.values], [_feature(f) for f in vector.features],
            list(vector.warnings)]  # fmt: skip


def outcomes(manifest: BundleManifest, scratch: Path) -> dict[str, Any]:
    """The digests of every case's outcome, per mapping, space-separated: each fixture
    record's (by name) at each of ``AS_OFS``, the random records' and the raw rows' in
    corpus order."""
    fixtures = list(fixture_records())
    golden: dict[str, Any] = {"fixtures": {}, "random": {}, "rows": {}}
    for name, mapping in mappings(manifest, scratch).items():
        golden["fixtures"][name] = {
            label: " ".join(digest(outcome(mapping, record, as_of)) for as_of in AS_OFS)
            for label, record in fixtures
        }
        golden["random"][name] = " ".join(
            digest(outcome(mapping, record, as_of)) for _, record, as_of in random_records()
        )
        golden["rows"][name] = " ".join(digest(read_outcome(mapping, row)) for row in raw_rows())
    return golden


def canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def digest(value: Any) -> str:
    """A short digest of an outcome's canonical JSON (the golden file stays small)."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:12]
