"""HL7 v2 acknowledgements: read the header of an incoming message, write its ACK.

Only the header segment (MSH, or BHS/FHS for a batch) is read here, by hand: it is enough to
address the ACK and it costs microseconds, whatever the message holds. Parsing the message
itself is the records part's job, reached through the scorer.

Bytes are decoded as ISO-8859-1, which maps every byte to one character and back, so fields
echoed from the sender (applications, facilities, control id) return byte for byte whatever
the message's character set (MSH-18); text the agent writes itself is ASCII.

The ACK carries no patient data: MSA-3 and ERR name an error reason slug, never a value.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

CHARSET = "iso-8859-1"
DEFAULT_VERSION = "2.5"
_DEFAULT_FIELD_SEP = "|"
_DEFAULT_ENCODING = "^~\\&"
_HEADERS = ("MSH", "BHS", "FHS")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HEADER_SCAN = 8192  # characters: a header segment longer than this is not one we can use


class AckCode(StrEnum):
    """MSA-1. Original mode: AA/AE/AR; enhanced mode accept acks: CA/CE/CR."""

    accept = "AA"
    error = "AE"
    reject = "AR"
    commit_accept = "CA"
    commit_error = "CE"
    commit_reject = "CR"


class AckCondition(StrEnum):
    """MSH-15 / MSH-16 (HL7 table 0155): when the sender wants an acknowledgement."""

    always = "AL"
    never = "NE"
    error = "ER"  # only on error or reject
    success = "SU"  # only on success

    def wants(self, succeeded: bool) -> bool:
        if self is AckCondition.always:
            return True
        if self is AckCondition.never:
            return False
        return succeeded if self is AckCondition.success else not succeeded


@dataclass(frozen=True)
class MessageHeader:
    """What the ACK needs from the incoming message's header segment (raw field text)."""

    segment: str  # MSH, BHS or FHS
    field_sep: str
    encoding: str  # component, repetition, escape, subcomponent (and truncation) characters
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""  # MSH-9 as sent, e.g. "ORU^R01^ORU_R01"
    control_id: str = ""  # MSH-10 (BHS-11 / FHS-11 for a batch)
    processing_id: str = ""  # MSH-11
    version: str = ""  # MSH-12
    accept_ack: AckCondition | None = None  # MSH-15
    application_ack: AckCondition | None = None  # MSH-16
    charset: str = ""  # MSH-18

    @property
    def enhanced_mode(self) -> bool:
        """HL7 enhanced acknowledgement mode applies when MSH-15 or MSH-16 is valued."""
        return self.accept_ack is not None or self.application_ack is not None

    @property
    def trigger_event(self) -> str:
        parts = self.message_type.split(self.encoding[0]) if self.encoding else []
        return parts[1] if len(parts) > 1 else ""


def parse_header(message: bytes) -> MessageHeader | None:
    """The header of ``message``, or None when it does not start with a usable MSH, BHS or
    FHS segment (after optional white space). Never raises on any input."""
    head = message[:HEADER_SCAN].removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    head_text = head.decode(CHARSET).lstrip("\r\n\t ")
    ends = [i for i in (head_text.find("\r"), head_text.find("\n")) if i >= 0]
    # Control characters (MLLP's 0x0B and 0x1C among them) are dropped, so nothing echoed
    # into the ACK can break its framing.
    line = _CONTROL.sub("", head_text[: min(ends)] if ends else head_text)
    name = line[:3]
    if name not in _HEADERS or len(line) < 8:
        return None
    field_sep = line[3]
    if field_sep.isalnum() or field_sep in " \r\n":
        return None
    fields = line.split(field_sep)
    encoding = fields[1]
    if not 4 <= len(encoding) <= 5 or field_sep in encoding:
        return None
    # fields[0] is the segment name and the separator itself is field 1, so field n of the
    # header (n >= 2) sits at fields[n - 1].

    def get(n: int) -> str:
        return fields[n - 1] if len(fields) >= n else ""

    addressed = MessageHeader(
        segment=name,
        field_sep=field_sep,
        encoding=encoding,
        sending_application=get(3),
        sending_facility=get(4),
        receiving_application=get(5),
        receiving_facility=get(6),
    )
    if name != "MSH":  # BHS/FHS: addresses as MSH-3..6, control id in field 11
        return replace(addressed, control_id=get(11))
    return replace(
        addressed,
        message_type=get(9),
        control_id=get(10),
        processing_id=get(11),
        version=get(12).split(encoding[0])[0],
        accept_ack=_condition(get(15)),
        application_ack=_condition(get(16)),
        charset=get(18),
    )


def _condition(value: str) -> AckCondition | None:
    try:
        return AckCondition(value.strip().upper()) if value.strip() else None
    except ValueError:
        return None


# MSA-3 wording by code; the reason slug follows it. AE's says which work was not done.
_OUTCOME_TEXT = {
    AckCode.reject: "rejected",
    AckCode.commit_error: "not accepted",
    AckCode.commit_reject: "rejected",
}


@dataclass(frozen=True)
class AckError:
    """What went wrong, as the ERR segment tells it (HL7 table 0357 code, our reason slug)."""

    hl7_code: str  # table 0357: 100 segment sequence, 200 unsupported type, 207 internal...
    hl7_text: str
    reason: str  # AgentError.reason
    detail: str = ""  # the AgentError's message: where and why, never a value (see errors)


@dataclass(frozen=True)
class ResultRow:
    """One output of one prediction, written as an OBX segment."""

    prediction: int  # 1-based index of the prediction (OBX-4 sub-id): a batch has several
    output: str
    value: float
    model: str
    version: str


def build_ack(
    header: MessageHeader | None,
    code: AckCode,
    *,
    errors: Sequence[AckError] = (),
    results: Sequence[ResultRow] = (),
    now: datetime | None = None,
    control_id: str | None = None,
    undone: str = "not scored",
) -> bytes:
    """An ACK message (segments joined by CR, no MLLP framing) answering ``header``.

    MSH-3..6 swap the sender's and receiver's application and facility, MSA-2 echoes the
    incoming control id, MSH-11/12/18 echo processing id, version and character set. With
    no header (the input was not HL7), a minimal ACK with the default separators is built.
    MSA-3 tells the first of ``errors`` (an AE's after ``undone``, the work not done: a
    message's scoring, an outcome's recording); each gets its own ERR segment (one per
    patient not scored, in a message that held several).
    ``results`` become OBX segments after MSA (and ERR): not part of the standard ACK
    structure, which is why the listener makes them optional.
    """
    h = header or MessageHeader("MSH", _DEFAULT_FIELD_SEP, _DEFAULT_ENCODING)
    fs, comp = h.field_sep, h.encoding[0]
    sub = h.encoding[3] if len(h.encoding) > 3 else "&"
    version = reply_version(h)
    trigger = h.trigger_event
    if trigger and version >= "2.4":
        message_type = comp.join(("ACK", trigger, "ACK"))
    elif trigger:
        message_type = comp.join(("ACK", trigger))
    else:
        message_type = "ACK"

    def esc(text: str) -> str:
        return escape(text, fs, h.encoding)

    segments = [reply_msh(h, message_type, now=now, control_id=control_id)]
    msa = ["MSA", code.value, h.control_id]
    if errors:
        # MSA-3 is 80 characters at most before v2.5; ERR-8 carries the whole detail after
        first = errors[0]
        said = undone if code is AckCode.error else _OUTCOME_TEXT.get(code, "error")
        text = f"{said}: {first.reason}"
        if first.detail and version < "2.5":
            text = f"{text}: {first.detail}"[:80]
        msa.append(esc(text))
    segments.append(fs.join(msa))
    segments += [_err_segment(e, version, fs, comp, sub, esc) for e in errors]
    segments += [obx_segment(h, i, row) for i, row in enumerate(results, start=1)]
    return "\r".join(segments).encode(CHARSET) + b"\r"


def reply_version(header: MessageHeader) -> str:
    """The HL7 version a reply to ``header`` is written in: the sender's, when it names one."""
    return header.version if _looks_like_version(header.version) else DEFAULT_VERSION


def reply_msh(
    header: MessageHeader,
    message_type: str,
    *,
    now: datetime | None = None,
    control_id: str | None = None,
) -> str:
    """The MSH of a message going back to ``header``'s sender: MSH-3..6 swapped (the agent,
    addressed as the sender named it, sends to the sender), MSH-7 the agent's time in UTC, a
    new control id (20 characters, the v2.3 length), processing id, version and character
    set echoed."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    msh = [
        "MSH",
        header.encoding,
        header.receiving_application,
        header.receiving_facility,
        header.sending_application,
        header.sending_facility,
        stamp,
        "",
        message_type,
        control_id if control_id is not None else uuid.uuid4().hex[:20],
        header.processing_id or "P",
        reply_version(header),
    ]
    if header.charset:
        msh += ["", "", "", "", "", header.charset]
    return header.field_sep.join(msh)


def obx_segment(header: MessageHeader, set_id: int, row: ResultRow, stamp: str = "") -> str:
    """One output as an OBX in ``header``'s delimiters: OBX-3 the output name (local code),
    OBX-4 the prediction number, OBX-5 a plain decimal, OBX-11 ``F``, OBX-14 ``stamp`` (the
    time of the observation, when given), OBX-17 the model and its version."""
    fs, comp = header.field_sep, header.encoding[0]

    def esc(text: str) -> str:
        return escape(text, fs, header.encoding)

    return fs.join(
        [
            "OBX",
            str(set_id),
            "NM",
            comp.join((esc(row.output), esc(row.output), "L")),
            str(row.prediction),
            _number(row.value),
            "",
            "",
            "",
            "",
            "",
            "F",
            "",
            "",
            stamp,
            "",
            "",
            comp.join((esc(row.model), esc(f"{row.model} {row.version}"), "L")),
        ]
    )


def parse_ack(message: bytes) -> tuple[str, str] | None:
    """MSA-1 (the acknowledgement code) and MSA-2 (the control id acknowledged) of an ACK,
    or None when ``message`` has no usable header or no MSA. Never raises."""
    header = parse_header(message)
    if header is None:
        return None
    for line in re.split(r"[\r\n]+", message.decode(CHARSET)):
        if line.startswith("MSA" + header.field_sep):
            fields = line.split(header.field_sep)
            code = fields[1].strip().upper() if len(fields) > 1 else ""
            return code, fields[2] if len(fields) > 2 else ""
    return None


def _err_segment(
    error: AckError, version: str, fs: str, comp: str, sub: str, esc: Callable[[str], str]
) -> str:
    """ERR in the shape the message's version expects: ERR-1 (ELD) before v2.5; ERR-3
    (HL7 error code), ERR-4 (severity), ERR-5 (application error code) and ERR-8 (user
    message) from v2.5 on, where ERR-1 is deprecated."""
    if version < "2.5":
        code = sub.join((error.hl7_code, esc(error.hl7_text), "HL70357"))
        return fs.join(["ERR", comp.join(("", "", "", code))])
    hl7_code = comp.join((error.hl7_code, esc(error.hl7_text), "HL70357"))
    message = esc(f"{error.reason}: {error.detail}" if error.detail else error.reason)
    return fs.join(["ERR", "", "", hl7_code, "E", esc(error.reason), "", "", message])


def escape(text: str, field_sep: str, encoding: str) -> str:
    """``text`` with HL7 delimiters replaced by escape sequences (\\F\\ \\S\\ \\R\\ \\E\\
    \\T\\), and line breaks, which would end the segment, by spaces."""
    esc_char = encoding[2] if len(encoding) > 2 else "\\"
    table: Mapping[str, str] = {
        esc_char: f"{esc_char}E{esc_char}",
        field_sep: f"{esc_char}F{esc_char}",
        encoding[0]: f"{esc_char}S{esc_char}",
        encoding[1]: f"{esc_char}R{esc_char}",
    }
    if len(encoding) > 3:
        table = {**table, encoding[3]: f"{esc_char}T{esc_char}"}
    out = []
    for ch in text:
        if ch in "\r\n":
            out.append(" ")
        else:
            out.append(table.get(ch, ch))
    return "".join(out)


def _looks_like_version(value: str) -> bool:
    return len(value) in (3, 5) and value.startswith("2.") and value.replace(".", "").isdigit()


def _number(value: float) -> str:
    """An NM value: plain decimal, no exponent (HL7 NM does not allow one)."""
    if value != value or value in (float("inf"), float("-inf")):
        return ""
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
