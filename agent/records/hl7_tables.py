"""HL7 v2 code tables the v2-to-FHIR conversion needs, as plain dicts.

The values follow the HL7 v2-to-FHIR implementation guide's concept maps: table 0396 (coding
system names) to FHIR system URIs, 0001 (administrative sex) to ``Patient.gender``, 0085
(observation result status) to ``Observation.status``, 0004 (patient class) to the v3
ActCode used by ``Encounter.class``. A coding system name missing from ``CODING_SYSTEMS`` is
a local one: ``RecordsConfig`` says which URI it becomes.
"""

from __future__ import annotations

UCUM = "http://unitsofmeasure.org"

# HL7 table 0396 -> FHIR system URI (the v2-to-FHIR "CodeSystem" concept map, common rows).
CODING_SYSTEMS: dict[str, str] = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNM3": "http://snomed.info/sct",
    "SCT2": "http://snomed.info/sct",
    "UCUM": UCUM,
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "HL70001": "http://terminology.hl7.org/CodeSystem/v2-0001",
    "HL70078": "http://terminology.hl7.org/CodeSystem/v2-0078",
    "HL70136": "http://terminology.hl7.org/CodeSystem/v2-0136",
}

# Names under which senders label UCUM units in OBX-6.3 (the v2 tables spell it two ways).
UCUM_NAMES = frozenset({"UCUM", "ANS+"})

# HL7 table 0001 -> FHIR administrative-gender (v2-to-FHIR concept map "Administrative Sex").
GENDER: dict[str, str] = {
    "F": "female",
    "M": "male",
    "O": "other",
    "A": "other",
    "U": "unknown",
    "N": "unknown",
    "X": "other",
}

# HL7 table 0085 -> FHIR observation-status (v2-to-FHIR concept map "Observation Result Status").
OBSERVATION_STATUS: dict[str, str] = {
    "C": "corrected",
    "D": "entered-in-error",
    "F": "final",
    "I": "registered",
    "O": "registered",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "U": "final",
    "W": "entered-in-error",
    "X": "cancelled",
    "A": "amended",
    "N": "cancelled",
}

# HL7 table 0125 (value types of OBX-5), every version 2.3 to 2.8: the ones the conversion
# reads are NM, SN, ST/TX/FT, CE/CWE/CNE/CF and DT/DTM/TS; the others become
# ``dataAbsentReason = unsupported``.
VALUE_TYPES = frozenset(
    [
        "AD",
        "CE",
        "CF",
        "CK",
        "CN",
        "CNE",
        "CP",
        "CWE",
        "CX",
        "DR",
        "DT",
        "DTM",
        "ED",
        "FT",
        "GTS",
        "ID",
        "IS",
        "MA",
        "MO",
        "NA",
        "NM",
        "NR",
        "PN",
        "RP",
        "SN",
        "ST",
        "TM",
        "TN",
        "TS",
        "TX",
        "XAD",
        "XCN",
        "XON",
        "XPN",
        "XTN",
    ]
)

# HL7 table 0004 -> v3 ActCode (v2-to-FHIR concept map "Patient Class").
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PATIENT_CLASS: dict[str, tuple[str, str]] = {
    "E": ("EMER", "emergency"),
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),
    "B": ("IMP", "inpatient encounter"),
}
