"""Outcome messages: HL7 v2 messages that report what happened to a patient (a death at
discharge, an ICU transfer, a coded result) rather than ask for a score, as the ``mllp:
outcomes:`` rules configure them (``OutcomeMessage``).

``OutcomeReader.read`` says whether a message is one (None: score it as usual) and turns it
into ``OutcomeReport``s per model: one per matching segment, for the patient of the PID
before it, named by PID-3 exactly as the scored message named it
(``agent.records.hl7_fhir.pid_reference``), labelled 1 or 0 by the configured values, and
timed by the first valued time field. The listener hands them to
``DataPlane.record_outcomes``, the one join path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from agent.errors import Hl7Error, NoOutcome, NoPatient
from agent.hl7.ack import MessageHeader
from agent.hl7.er7 import Er7Message, Segment, read_message, split_batch
from agent.intake.mllp.config import FieldPath, OutcomeMessage
from agent.mapping.facts import VOID_STATUS
from agent.records.config import RecordsConfig
from agent.records.hl7_fhir import hl7_instant, pid_reference
from agent.records.hl7_tables import OBSERVATION_STATUS
from agent.records.hl7v2 import decode_hl7v2
from agent.types import OutcomeReport


@dataclass(frozen=True)
class _Rule:
    """An ``OutcomeMessage`` compiled: the codes as ``system|code``, the fields parsed."""

    message_type: tuple[str, str]
    model: str
    code: str | None
    value: FieldPath
    positive: frozenset[str]
    negative: frozenset[str]
    time: tuple[FieldPath, ...]


class OutcomeReader:
    """Reads outcome messages by the configured rules (see the module docstring)."""

    def __init__(
        self, rules: Sequence[OutcomeMessage], default_model: str, records: RecordsConfig
    ) -> None:
        self._rules = tuple(
            _Rule(
                message_type=_message_type(rule.message),
                model=rule.model or default_model,
                code=rule.code,
                value=rule.value_field,
                positive=frozenset(rule.positive),
                negative=frozenset(rule.negative),
                time=rule.time_fields,
            )
            for rule in rules
        )
        self._types = {rule.message_type for rule in self._rules}
        self._records = records
        self._zone = ZoneInfo(records.hl7_timezone)

    def concerns(self, header: MessageHeader) -> bool:
        """Whether a message with this header may report outcomes (its MSH-9 type is
        configured): decided from the header alone, so other messages cost nothing more."""
        if not header.encoding or header.segment != "MSH":
            return False
        code, _, rest = header.message_type.partition(header.encoding[0])
        event = rest.partition(header.encoding[0])[0]
        return (code.strip(), event.strip()) in self._types

    def read(self, body: bytes) -> Mapping[str, list[OutcomeReport]] | None:
        """The outcomes ``body`` reports, by model; None when it is no outcome message (its
        type is not configured, or no OBX carries a configured code). Raises Hl7Error for
        an unreadable message, NoPatient for an outcome without PID-3, NoOutcome for a
        value neither positive nor negative or no time."""
        text = decode_hl7v2(body.lstrip(b"\x0b").rstrip(b"\x1c\r\n"))
        found: dict[str, list[OutcomeReport]] = {}
        for part in split_batch(text):  # segment ends as the records part reads them
            message = read_message(part)
            for rule in self._rules:
                if rule.message_type != message.message_type:
                    continue
                for segment in self._matching(rule, message):
                    found.setdefault(rule.model, []).append(self._report(rule, message, segment))
        return found or None

    def _matching(self, rule: _Rule, message: Er7Message) -> list[Segment]:
        """The segments that state the outcome: the OBX carrying the code, or every segment
        holding the value field. A rule without code whose segment is absent is NoOutcome:
        the message type was routed here to report outcomes."""
        if rule.code is not None:
            return [
                s
                for s in message.segments
                if s.name == "OBX" and self._coded(s, rule.code) and not _void(s)
            ]
        segments = [s for s in message.segments if s.name == rule.value.segment]
        if not segments:
            raise NoOutcome(f"no {rule.value.segment} segment to read {rule.value} from")
        return segments

    def _coded(self, segment: Segment, code: str) -> bool:
        """Whether OBX-3 carries ``code`` as its primary (1-3) or alternate (4-6) coding,
        the coding systems named as the records part names them."""
        comps = segment.first(3) + [""] * 6
        return any(
            comps[at] and f"{self._records.coding_system(comps[at + 2])}|{comps[at]}" == code
            for at in (0, 3)
        )

    def _report(self, rule: _Rule, message: Er7Message, segment: Segment) -> OutcomeReport:
        value = segment.value(rule.value.field, rule.value.component).strip()
        if value in rule.positive:
            label = 1
        elif value in rule.negative:
            label = 0
        else:
            raise NoOutcome(f"{segment.where(rule.value.field)}: not a configured outcome value")
        pid = _before(message, segment, "PID")
        reference = pid_reference(pid) if pid is not None else None
        if not reference:
            raise NoPatient(f"{segment.where(rule.value.field)}: no PID-3 names the patient")
        return OutcomeReport(reference, label, self._time(rule, message, segment))

    def _time(self, rule: _Rule, message: Er7Message, segment: Segment) -> datetime:
        for place in rule.time:
            source = _before(message, segment, place.segment)
            moment = hl7_instant(source, place.field, self._zone) if source else None
            if moment is not None:
                return moment
        raise NoOutcome(f"no time in {', '.join(str(p) for p in rule.time)}")


def _void(segment: Segment) -> bool:
    """Whether an OBX is withdrawn (entered in error, deleted, cancelled): it says nothing
    about the patient, as for the site mapping's ``outcome:`` rule. Hl7Error for a status
    not in HL7 table 0085, as the records part refuses it."""
    status = segment.value(11)
    if status not in OBSERVATION_STATUS:
        raise Hl7Error(f"{segment.where(11)}: result status not in HL7 table 0085")
    return OBSERVATION_STATUS[status] in VOID_STATUS


def _message_type(text: str) -> tuple[str, str]:
    code, _, event = text.partition("^")
    return code, event


def _before(message: Er7Message, segment: Segment, name: str) -> Segment | None:
    """``segment`` itself when it is named ``name``, else the nearest segment so named
    before it (its PID, its OBR, the message's EVN and MSH)."""
    for candidate in reversed(message.segments[: segment.position]):
        if candidate.name == name:
            return candidate
    return None
