"""HL7 v2 in: one message or a batch (FHS/BHS ... BTS/FTS), converted to FHIR records."""

from __future__ import annotations

import re

from agent.errors import Hl7Error
from agent.hl7.ack import HEADER_SCAN, parse_header
from agent.hl7.er7 import read_message, split_batch
from agent.limits import Limits
from agent.records.config import RecordsConfig
from agent.records.hl7_fhir import message_to_records
from agent.types import ElementReach, PatientRecord

# HL7 table 0211, the character sets MSH-18 may name, as Python codecs: the single-byte
# sets and those multi-byte ones whose bytes never hold CR or the MLLP frame bytes. The
# ISO 2022 sets (ISO IR14, ISO IR87, ISO IR159), CNS 11643 and UTF-16/32 are not read: a
# message in one is refused rather than decoded as something it is not.
_CHARSETS = {
    "": "utf-8",  # none named: UTF-8, of which ASCII (HL7's default) is a subset
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "UNICODE UTF-8": "utf-8",
    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
_MSH = re.compile(rb"(?:^|[\r\n])(MSH)")


def decode_hl7v2(body: bytes) -> str:
    """The text of ``body`` in the character set its MSH-18 names (the first repetition:
    the others are for escape sequences), UTF-8 when none. Hl7Error when that set is one the
    agent does not read, when the messages of a batch name different ones, or when the bytes
    are not in it."""
    names = set()
    for found in _MSH.finditer(body):
        start = found.start(1)
        header = parse_header(body[start : start + HEADER_SCAN])
        if header is not None:
            names.add(header.charset.split(header.encoding[1])[0].strip().upper())
    if len(names) > 1:
        raise Hl7Error("the messages of this batch name different MSH-18 character sets")
    codec = _CHARSETS.get(names.pop() if names else "")
    if codec is None:
        raise Hl7Error("MSH-18 names a character set the agent does not read")
    try:
        return body.decode(codec)
    except UnicodeDecodeError:
        raise Hl7Error("message is not valid in the character set MSH-18 names") from None


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
