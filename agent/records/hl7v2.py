"""HL7 v2 in: one message or a batch (FHS/BHS ... BTS/FTS), converted to FHIR records."""

from __future__ import annotations

from agent.errors import Hl7Error
from agent.hl7.er7 import read_message, split_batch
from agent.limits import Limits
from agent.records.config import RecordsConfig
from agent.records.hl7_fhir import message_to_records
from agent.types import ElementReach, PatientRecord


def decode_hl7v2(body: bytes) -> str:
    """UTF-8 (ASCII is a subset) unless MSH-18 names ISO 8859-1."""
    head = body[:512].split(b"\r", 1)[0].split(b"\n", 1)[0]
    latin1 = b"8859/1" in head or b"8859/15" in head
    try:
        return body.decode("latin-1" if latin1 else "utf-8")
    except UnicodeDecodeError:
        raise Hl7Error("message is not valid UTF-8 and MSH-18 names no ISO 8859 charset") from None


def parse_hl7v2(
    body: bytes, limits: Limits, config: RecordsConfig, reach: ElementReach | None = None
) -> list[PatientRecord]:
    """Every message in ``body``, in order; one record per patient per message. ``reach`` is
    not used: the FHIR resources come from the agent's own conversion, not from a sender."""
    text = decode_hl7v2(body.lstrip(b"\x0b").rstrip(b"\x1c\r\n"))
    records: list[PatientRecord] = []
    for number, message in enumerate(split_batch(text), start=1):
        try:
            records.extend(message_to_records(read_message(message), config))
        except Hl7Error as exc:
            if number == 1 and not records:
                raise
            raise Hl7Error(f"message #{number} in batch: {exc}") from None
        if len(records) > limits.records_per_request_max:
            raise Hl7Error(f"more than {limits.records_per_request_max} patients in one request")
    return records
