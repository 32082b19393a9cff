"""The ``records:`` section of the agent config: what the HL7 v2 conversion cannot guess."""

from __future__ import annotations

from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from agent.configbase import Section
from agent.records.hl7_tables import CODING_SYSTEMS


class FhirValidation(StrEnum):
    """How much of each FHIR resource is validated (docs/records.md, "Validation modes")."""

    full = "full"
    """Patient, Observation and Encounter validated in full by the fhir.resources R4B models,
    then by the ``essential`` rules the models do not enforce."""

    essential = "essential"
    """Only the elements the agent reads, by the same R4 rules, without the models."""


class RecordsConfig(Section):
    """How FHIR input is validated, and how HL7 v2 coding systems and times become FHIR."""

    fhir_validation: FhirValidation = FhirValidation.full
    """``full`` (default): every element of each Patient, Observation and Encounter (and the
    Bundle shell) is validated by the R4B models, then by the ``essential`` rules, so a
    malformed element mapping never reads is still refused. ``essential``: only the elements
    the agent reads (listed in docs/records.md) are checked, by the same R4 datatype rules;
    other elements pass unchecked and fhir.resources is never imported. About 10x cheaper per
    Bundle; choose it where the sender validates on its side and no FHIRPath feature of the
    mappings reads an element outside that list."""

    hl7_coding_systems: dict[str, str] = Field(default_factory=dict)
    """Extra or overriding HL7 table 0396 names -> FHIR system URI, e.g. the site's local lab
    code table ``{"99LAB": "http://hospital.example.org/fhir/CodeSystem/lab"}``."""

    hl7_local_system: str = "urn:hl7v2-local:{name}"
    """URI template for a coding system name found in neither the standard table nor
    ``hl7_coding_systems`` (``L``, ``99xxx``, ...); ``{name}`` is the OBX-3.3 name."""

    hl7_timezone: str = "UTC"
    """IANA zone for HL7 timestamps that carry no UTC offset (FHIR needs one)."""

    @field_validator("hl7_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("not a known IANA time zone") from exc
        return value

    @field_validator("hl7_local_system")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.replace("{name}", "").count("{") or ":" not in value:
            raise ValueError("must be a URI, optionally with one {name} placeholder")
        return value

    def coding_system(self, name: str) -> str:
        """The FHIR system URI for an HL7 coding system name (table 0396 or local)."""
        found = self.hl7_coding_systems.get(name) or CODING_SYSTEMS.get(name)
        return found if found is not None else self.hl7_local_system.replace("{name}", name)
