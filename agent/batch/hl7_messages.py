"""HL7 v2 batch files cut into messages, streamed.

A batch is either wrapped (``FHS``/``BHS`` ... ``BTS``/``FTS``) or simply several messages
one after another; segments end in CR, LF or CRLF. Each message starts at its ``MSH``
segment and becomes one record, re-joined with CR (the HL7 segment separator). Envelope
segments are dropped. Segments before the first ``MSH`` are one bad record (``no_msh``).
The label is the message control id (MSH-10), which the caller's interface engine knows.
MLLP frame bytes left in a dump of an interface engine's traffic, and a BOM, are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from agent.batch.items import BadItem, BatchItem, RecordItem
from agent.batch.lines import BOM, read_lines
from agent.limits import Limits
from agent.types import RecordFormat

_ENVELOPE = frozenset({b"FHS", b"BHS", b"BTS", b"FTS"})
_PADDING = b" \t\x0b\x1c\x00"  # blanks, and MLLP frame bytes a dump may keep


def clean_segment(line: bytes) -> bytes:
    """A segment without a leading BOM, MLLP frame bytes or blanks around it."""
    return line.removeprefix(BOM).strip(_PADDING)


@dataclass
class _Message:
    first: int
    segments: list[bytes] = field(default_factory=list)
    last: int = 0
    size: int = 0
    overflow: bool = False

    def add(self, number: int, segment: bytes | None, max_len: int) -> None:
        self.last = number
        if segment is None or self.size + len(segment) + 1 > max_len:
            self.overflow = True
            self.segments.clear()
        if not self.overflow and segment is not None:
            self.segments.append(segment)
            self.size += len(segment) + 1

    def item(self) -> BatchItem:
        lines = (self.first, self.last)
        if self.overflow:
            return BadItem(lines, "too_large", "message larger than the HL7 message size limit")
        if not self.segments[0].startswith(b"MSH"):
            return BadItem(lines, "no_msh", "segments before the first MSH segment")
        body = b"\r".join(self.segments) + b"\r"
        return RecordItem(lines, body, RecordFormat.hl7v2, _control_id(self.segments[0]))


def _control_id(msh: bytes) -> str:
    """MSH-10; the field separator is the byte right after ``MSH``."""
    fields = msh.split(msh[3:4]) if len(msh) > 3 else []
    return fields[9].decode("latin-1") if len(fields) > 9 else ""


def hl7_items(stream: BinaryIO, limits: Limits) -> Iterator[BatchItem]:
    """Stream messages with memory bounded by one message (``limits.hl7_message_max``)."""
    message: _Message | None = None
    for number, line, _ in read_lines(stream, limits.hl7_message_max):
        segment = clean_segment(line) if line is not None else None
        if segment == b"":
            continue
        tag = segment[:3] if segment is not None else b""
        if tag in _ENVELOPE or tag == b"MSH":
            if message is not None:
                yield message.item()
            message = None
            if tag in _ENVELOPE:
                continue
        if message is None:
            message = _Message(first=number)
        message.add(number, segment, limits.hl7_message_max)
    if message is not None:
        yield message.item()
