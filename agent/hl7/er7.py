"""Reading HL7 v2 ER7 text: hl7apy for the message header and the version's segment
definitions, a light splitter for the fields the conversion reads.

Why not hl7apy's full parse: it builds an element tree for every field of every segment,
about 0.8 ms per segment on the target hardware (27 ms for a 30-OBX ORU, with or without
``find_groups``, whole message or segment by segment). The agent reads a dozen fields, so it
takes from hl7apy what carries the correctness — ``get_message_info`` (MSH-1/MSH-2 encoding
characters with their duplicate and missing checks, MSH-9 structure, MSH-12 version),
``check_version`` and the per-version segment definitions (known segments, required and
non-repeating fields) — and splits the fields itself with those encoding characters,
undoing the escape sequences (which hl7apy leaves in place) at the leaves.

Errors name the segment (and its position) and the field, never a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from hl7apy import check_version, load_reference
from hl7apy.exceptions import (
    ChildNotFound,
    HL7apyException,
    InvalidEncodingChars,
    ParserError,
    UnsupportedVersion,
)
from hl7apy.parser import get_message_info

from agent.errors import Hl7Error

_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")
# Fields the conversion reads: where the version's definition says required, they must be there.
_READ_FIELDS: dict[str, tuple[int, ...]] = {
    "MSH": (9, 10, 12),
    "PID": (3,),
    "PV1": (2,),
    "OBR": (4, 7),
    "OBX": (2, 3, 11),
}
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8")


@dataclass(frozen=True)
class FieldSpec:
    """A field as the version's standard defines it (from hl7apy's tables)."""

    required: bool
    repeats: bool


@cache
def segment_spec(name: str, version: str) -> dict[int, FieldSpec] | None:
    """Field definitions of a segment in a version; None if the version does not define it."""
    try:
        reference = load_reference(name, "Segment", version)
    except (ChildNotFound, HL7apyException, KeyError):
        return None
    fields: dict[int, FieldSpec] = {}
    for child in reference[1]:
        number = int(child[0].rsplit("_", 1)[1])
        low, high = child[2]
        fields[number] = FieldSpec(required=low >= 1, repeats=high != 1)
    return fields


@dataclass(frozen=True)
class Encoding:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str

    def unescape(self, text: str, where: str) -> str:
        """Undo ER7 escape sequences (``\\F\\``, ``\\S\\``, ``\\T\\``, ``\\R\\``, ``\\E\\``,
        ``\\.br\\``, ``\\Xhh..\\``); formatting and charset escapes are dropped."""
        esc = self.escape
        if not esc or esc not in text:
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch != esc:
                out.append(ch)
                i += 1
                continue
            end = text.find(esc, i + 1)
            if end < 0:
                raise Hl7Error(f"{where}: unterminated escape sequence")
            code = text[i + 1 : end]
            simple = {
                "F": self.field,
                "S": self.component,
                "T": self.subcomponent,
                "R": self.repetition,
                "E": esc,
                ".br": "\n",
            }
            if code in simple:
                out.append(simple[code])
            elif code.startswith("X") and len(code) % 2 == 1:
                try:
                    out.append(bytes.fromhex(code[1:]).decode("latin-1"))
                except ValueError:
                    raise Hl7Error(f"{where}: malformed hexadecimal escape") from None
            elif not code or code[0] not in "HNZCM.":
                raise Hl7Error(f"{where}: unknown escape sequence")
            i = end + 1
        return "".join(out)


@dataclass(frozen=True)
class Segment:
    """One segment: its name, position (1-based) and raw fields (index = field number)."""

    name: str
    position: int
    fields: tuple[str, ...]
    encoding: Encoding

    def where(self, number: int, component: int | None = None) -> str:
        at = f"{self.name}-{number}" + (f".{component}" if component else "")
        return f"segment {self.name} #{self.position}, field {at}"

    def repetitions(self, number: int) -> list[str]:
        raw = self.fields[number] if number < len(self.fields) else ""
        return [r for r in raw.split(self.encoding.repetition)] if raw else []

    def components(self, raw: str, number: int) -> list[str]:
        """Components of one repetition, first subcomponent of each, unescaped."""
        enc = self.encoding
        return [
            enc.unescape(c.split(enc.subcomponent, 1)[0], self.where(number, i + 1))
            for i, c in enumerate(raw.split(enc.component))
        ]

    def first(self, number: int) -> list[str]:
        """Components of the first repetition ([] when the field is empty)."""
        reps = self.repetitions(number)
        return self.components(reps[0], number) if reps else []

    def value(self, number: int, component: int = 1) -> str:
        """One component of the first repetition, '' when absent."""
        comps = self.first(number)
        return comps[component - 1] if len(comps) >= component else ""


@dataclass(frozen=True)
class Er7Message:
    version: str
    structure: str  # e.g. ORU_R01, from MSH-9
    message_type: tuple[str, str]  # MSH-9.1, MSH-9.2
    control_id: str  # MSH-10: the caller's correlation id
    segments: tuple[Segment, ...]


def split_batch(text: str) -> list[str]:
    """Messages of an ER7 text: one message, or a batch wrapped in FHS/BHS ... BTS/FTS."""
    lines = [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s.strip()]
    messages: list[list[str]] = []
    for number, line in enumerate(lines, start=1):
        name = line[:3]
        if name in ("FHS", "BHS", "BTS", "FTS"):
            if name == "FHS" and number != 1:
                raise Hl7Error(f"segment FHS #{number}: a file header must come first")
            continue
        if name == "MSH":
            messages.append([line])
        elif not messages:
            raise Hl7Error(f"segment #{number}: message does not start with MSH")
        else:
            messages[-1].append(line)
    if not messages:
        raise Hl7Error("no MSH segment found")
    return ["\r".join(m) for m in messages]


def read_message(text: str) -> Er7Message:
    """Split one message into segments after hl7apy has read and checked its header."""
    try:
        encoding_chars, structure, version = get_message_info(text)
    except InvalidEncodingChars:
        raise Hl7Error("segment MSH #1, field MSH-2: invalid encoding characters") from None
    except (ParserError, HL7apyException, IndexError):
        raise Hl7Error("segment MSH #1: not an HL7 v2 message header") from None
    if version not in SUPPORTED_VERSIONS:
        raise Hl7Error("segment MSH #1, field MSH-12: HL7 version not supported (2.3 to 2.8)")
    try:
        check_version(version)
    except UnsupportedVersion:
        raise Hl7Error("segment MSH #1, field MSH-12: HL7 version not supported") from None
    enc = Encoding(
        field=encoding_chars["FIELD"],
        component=encoding_chars["COMPONENT"],
        repetition=encoding_chars["REPETITION"],
        escape=encoding_chars["ESCAPE"],
        subcomponent=encoding_chars["SUBCOMPONENT"],
    )
    segments: list[Segment] = []
    for position, line in enumerate(text.split("\r"), start=1):
        name = line[:3]
        if not _SEGMENT_NAME.match(name) or (len(line) > 3 and line[3] != enc.field):
            raise Hl7Error(f"segment #{position}: not a valid segment name")
        parts = line.split(enc.field)
        # MSH-1 is the field separator itself: shift so that fields[n] is MSH-n.
        fields = (name, enc.field, *parts[1:]) if name == "MSH" else tuple(parts)
        segment = Segment(name, position, fields, enc)
        _check_segment(segment, version)
        segments.append(segment)
    msh = segments[0]
    kind = (msh.value(9, 1), msh.value(9, 2))
    return Er7Message(
        version=version,
        structure=structure or "_".join(kind),
        message_type=kind,
        control_id=msh.value(10),
        segments=tuple(segments),
    )


def _check_segment(segment: Segment, version: str) -> None:
    if segment.name.startswith("Z"):
        return  # site-defined segments: allowed by the standard, ignored by the agent
    spec = segment_spec(segment.name, version)
    if spec is None:
        raise Hl7Error(f"segment {segment.name} #{segment.position}: not defined in HL7 v{version}")
    read = _READ_FIELDS.get(segment.name, ())
    for number, field in spec.items():
        if segment.name == "MSH" and number <= 2:
            continue
        raw = segment.fields[number] if number < len(segment.fields) else ""
        if field.required and number in read and not raw.strip():
            raise Hl7Error(f"{segment.where(number)}: required field is empty")
        if not field.repeats and segment.encoding.repetition in raw:
            raise Hl7Error(f"{segment.where(number)}: field does not repeat in v{version}")
