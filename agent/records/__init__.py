"""Records: FHIR R4 JSON / NDJSON and HL7 v2 in, one ``PatientRecord`` per patient out, all
as FHIR R4 resource dicts so that mapping sees one model. See docs/records.md."""

from agent.records.config import RecordsConfig
from agent.records.parse import parse_records

__all__ = ["RecordsConfig", "parse_records"]
