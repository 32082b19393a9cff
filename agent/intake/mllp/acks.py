"""What an MLLP message's outcome means in HL7 terms: the ACK code and ERR segments for a
message that was scored, refused or not readable, and the acknowledgement messages that
answer it in original or enhanced mode. The one place where agent errors meet HL7 ACK
codes (docs/mllp.md lists them for an interface analyst).

Apart from the listener, which owns sockets, framing and the order of work, so that this
mapping is pure: outcome in, ACK bytes out, testable without a connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.errors import AgentError, InternalError, NoPatient, RecordError, UnsupportedMediaType
from agent.hl7.ack import AckCode, AckCondition, AckError, MessageHeader, ResultRow, build_ack
from agent.intake.mllp.config import AckMode
from agent.types import Prediction, ScoreResult


@dataclass(frozen=True)
class Outcome:
    """How one message ended, in HL7 terms: the original-mode code and, if any, the error."""

    code: AckCode  # AA, AE or AR
    errors: tuple[AckError, ...] = ()  # the first is told in MSA-3; each has an ERR
    predictions: Sequence[Prediction] = ()
    internal: bool = False  # AR because of the agent, not the message (accept ack CE)
    undone: str = "not scored"  # an AE's MSA-3 says this work was not done


# the ERR of a frame that is not HL7, of one over the size limit, of a result not spooled
NOT_HL7 = AckError("100", "Segment sequence error", "bad_input")
TOO_LARGE = AckError("207", "Application internal error", "request_too_large")
NOT_SPOOLED = AckError("207", "Application internal error", "result_spool")


def outcome_of_error(exc: Exception) -> Outcome:
    """The ACK for a message that was not scored at all: AR when it cannot be read (a record
    error: unparseable, unsupported type), AE when it was read but could not be scored (no
    patient in it, unknown model, model trap, deadline...), AR with ``internal`` for a bug
    (the data plane's InternalError, or anything unexpected here). Agent errors' messages
    say where and why (segment and field, feature) and never carry a value, so the interface
    team sees them in ERR-8; a bug's message is never sent."""
    if isinstance(exc, UnsupportedMediaType):
        error = AckError("200", "Unsupported message type", exc.reason, str(exc))
        return Outcome(AckCode.reject, (error,))
    if isinstance(exc, NoPatient):
        error = AckError("100", "Segment sequence error", exc.reason, str(exc))
        return Outcome(AckCode.error, (error,))
    if isinstance(exc, RecordError):
        error = AckError("102", "Data type error", exc.reason, str(exc))
        return Outcome(AckCode.reject, (error,))
    if isinstance(exc, AgentError) and not isinstance(exc, InternalError):
        error = AckError("207", "Application internal error", exc.reason, str(exc))
        return Outcome(AckCode.error, (error,))
    error = AckError("207", "Application internal error", "internal")
    return Outcome(AckCode.reject, (error,), internal=True)


def outcome_of_result(result: ScoreResult) -> Outcome:
    """AA only when every patient in the message was scored; otherwise AE with an ERR per
    patient not scored (naming the patient by its PID-3 identifier when the message held
    several, so the interface team knows which)."""
    refused = result.refused
    if not refused:
        return Outcome(AckCode.accept, predictions=result.predictions)
    several = len(result.outcomes) > 1
    errors = tuple(
        AckError(
            "207",
            "Application internal error",
            o.refusal.reason if o.refusal else "internal",
            (f"patient {o.reference}: " if several and o.reference else "")
            + (o.refusal.detail if o.refusal else ""),
        )
        for o in refused
    )
    return Outcome(AckCode.error, errors)


def acknowledgements(
    header: MessageHeader | None, outcome: Outcome, ack_mode: AckMode
) -> list[bytes]:
    """The ACK messages answering one message, in the order they are sent.

    Original mode (MSH-15 and MSH-16 empty): one ACK, AA/AE/AR. Enhanced mode: an accept
    ACK (CA, CR when the message was rejected, CE when the agent failed) if MSH-15's
    condition holds, then an application ACK (AA/AE/AR) if MSH-16's holds, both on this
    connection; an empty MSH-15 or MSH-16 in enhanced mode counts as AL.
    """
    results: list[ResultRow] = []
    if outcome.code is AckCode.accept and ack_mode is AckMode.results:
        results = [
            ResultRow(i, name, value, p.model, p.version)
            for i, p in enumerate(outcome.predictions, start=1)
            for name, value in p.outputs.items()
        ]
    application = build_ack(
        header, outcome.code, errors=outcome.errors, results=results, undone=outcome.undone
    )
    if header is None or not header.enhanced_mode:
        return [application]
    acks = []
    accepted = outcome.code is not AckCode.reject
    if (header.accept_ack or AckCondition.always).wants(accepted):
        commit = (
            AckCode.commit_accept
            if accepted
            else AckCode.commit_error
            if outcome.internal
            else AckCode.commit_reject
        )
        acks.append(build_ack(header, commit, errors=() if accepted else outcome.errors))
    if (header.application_ack or AckCondition.always).wants(outcome.code is AckCode.accept):
        acks.append(application)
    return acks
