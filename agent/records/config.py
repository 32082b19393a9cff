"""The ``records:`` section of the agent config: what the HL7 v2 conversion cannot guess."""

from __future__ import annotations

from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from agent.configbase import Section
from agent.records.hl7_tables import CODING_SYSTEMS


class FhirValidation(StrEnum):
    """How much of each FHIR resource is validated (docs/records.md, "Validation modes")."""

    essential = "essential"
    """Every element the agent can read, by the R4 datatype rules, without the models: what
    its own code reads, and each element the served mapping's FHIRPath features can reach,
    with its whole subtree (the whole resource where an expression can reach anything)."""

    full = "full"
    """Patient, Observation and Encounter validated in full by the fhir.resources R4B models,
    then by the ``essential`` rules the models do not enforce."""


class RecordsConfig(Section):
    """How FHIR input is validated, and how HL7 v2 coding systems and times become FHIR."""

    fhir_validation: FhirValidation = FhirValidation.essential
    """``essential`` (default): every element any feature of the served mapping can read,
    FHIRPath included, is checked by the R4 datatype rules, so a malformed value is refused
    wherever mapping would read it; elements nothing reads pass unchecked and fhir.resources
    is not imported (unless a FHIRPath feature reaches contained resources and the input has
    some). ``full``: every element of each Patient, Observation and Encounter (and the Bundle
    shell) is also validated by the R4B models, so a malformed element nothing reads is
    refused too: about 10x the cost per Bundle, for a site that wants the whole message
    proven R4."""

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
