"""Outcome messages over MLLP: the ``mllp.outcomes`` rules as config, how a message is
read against them (patient, label, time), and the listener on a real socket answering AA
once outcomes are recorded, AE naming why not, and scoring every other message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from agent.errors import AgentError, Hl7Error, NoOutcome, NoPatient, NotEnabled
from agent.hl7.ack import parse_header
from agent.hl7.er7 import read_message
from agent.intake.mllp.config import MllpConfig, OutcomeMessage
from agent.intake.mllp.outcomes import OutcomeReader
from agent.records.config import RecordsConfig
from agent.records.hl7_fhir import message_to_records
from agent.types import OutcomeReceipt, OutcomeReport
from tests.intake.mllp_support import (
    EB,
    SB,
    RecordingScorer,
    connect,
    message,
    read_frame,
    running_listener,
    segments,
)

ORU_RULE = {"message": "ORU^R01", "code": "loinc|75323-6", "positive": ["1"], "negative": ["0"]}
DEATH_RULE = {"message": "ADT^A03", "field": "PV1-36", "positive": ["20"], "model": "mortality"}
ICU_RULE = {"message": "ADT^A02", "field": "PV1-3.1", "positive": ["ICU", "MICU"]}
PID = "PID|1||~MRN-0815^^^HOSP^MR~OTHER-1^^^X^PI||Doe^Jane||19500101|F"


def hl7(*lines: str) -> bytes:
    return ("\r".join(lines) + "\r").encode()


def msh(kind: str, stamp: str = "20260316080000") -> str:
    return f"MSH|^~\\&|ADT|HOSP|EDGE|ICU|{stamp}||{kind}|CTL-1|P|2.5"


def reader(*rules: dict[str, Any], zone: str = "UTC") -> OutcomeReader:
    config = MllpConfig.model_validate({"model": "deterioration", "outcomes": rules})
    return OutcomeReader(config.outcomes, "deterioration", RecordsConfig(hl7_timezone=zone))


def read(outcomes: OutcomeReader, body: bytes) -> dict[str, list[OutcomeReport]] | None:
    header = parse_header(body)
    assert header is not None
    if not outcomes.concerns(header):
        return None
    found = outcomes.read(body)
    return dict(found) if found is not None else None


# --- config -----------------------------------------------------------------------------
def test_rules_are_normalised_at_load() -> None:
    rule = OutcomeMessage.model_validate(ORU_RULE)
    assert rule.code == "http://loinc.org|75323-6"
    assert str(rule.value_field) == "OBX-5"
    assert [str(t) for t in rule.time_fields] == ["OBX-14", "EVN-6", "EVN-2", "MSH-7"]
    icu = OutcomeMessage.model_validate(ICU_RULE)
    assert (icu.value_field.segment, icu.value_field.field, icu.value_field.component) == (
        "PV1",
        3,
        1,
    )


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({**ORU_RULE, "message": "ORU_R01"}, r"code\^event"),
        ({**ORU_RULE, "code": "lonic|75323-6"}, "alias .lonic."),
        ({**ORU_RULE, "code": "75323-6"}, "system|code"),
        ({"message": "ADT^A03", "positive": ["20"]}, "give code"),
        ({**ORU_RULE, "field": "PV1-36"}, "must be an OBX field"),
        ({**ORU_RULE, "negative": ["1"]}, "both positive and negative"),
        ({**DEATH_RULE, "field": "PV1-"}, "not a field"),
        ({**DEATH_RULE, "time": []}, "at least one field"),
        ({**DEATH_RULE, "positive": []}, "at least 1 item"),
        ({**DEATH_RULE, "positve": ["20"]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(rule: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        MllpConfig.model_validate({"enabled": True, "model": "m", "outcomes": [rule]})


# --- reading a message ------------------------------------------------------------------
def test_a_coded_result_is_an_outcome_of_the_pid_before_it() -> None:
    body = hl7(
        msh("ORU^R01^ORU_R01"),
        PID,
        "OBR|1|||75323-6^Outcome^LN",
        "OBX|1|NM|75323-6^ICU transfer within 48h^LN||1||||||F|||20260316073000+0100",
        "PID|2||MRN-0816^^^HOSP^MR",
        "OBX|1|NM|75323-6^ICU transfer within 48h^LN||0||||||F",
    )
    found = read(reader(ORU_RULE), body)
    moment = datetime(2026, 3, 16, 7, 30, tzinfo=timezone(timedelta(hours=1)))
    assert found == {
        "deterioration": [
            OutcomeReport("MRN-0815", 1, moment),
            OutcomeReport("MRN-0816", 0, datetime(2026, 3, 16, 8, tzinfo=UTC)),  # MSH-7
        ]
    }


def test_segments_may_end_in_line_feeds_as_the_records_part_reads_them() -> None:
    body = hl7(msh("ORU^R01"), PID, "OBX|1|NM|75323-6^x^LN||1||||||F").replace(b"\r", b"\r\n")
    found = read(reader(ORU_RULE), body)
    assert found is not None and [r.label for r in found["deterioration"]] == [1]


def test_the_patient_is_named_as_the_scored_message_names_it() -> None:
    """The prediction was kept under the scored record's reference; the outcome must be
    keyed the same way, or it would never join."""
    scored = hl7(msh("ORU^R01^ORU_R01"), PID, "OBX|1|NM|8867-4^HR^LN||80|/min|||||F")
    [record] = message_to_records(read_message(scored.decode().rstrip("\r")), RecordsConfig())
    outcome = hl7(msh("ORU^R01^ORU_R01"), PID, "OBX|1|NM|75323-6^x^LN||1||||||F")
    found = read(reader(ORU_RULE), outcome)
    assert found is not None and found["deterioration"][0].reference == record.reference


def test_a_result_without_the_code_is_scored_as_usual() -> None:
    body = hl7(msh("ORU^R01^ORU_R01"), PID, "OBX|1|NM|8867-4^HR^LN||80|/min|||||F")
    assert read(reader(ORU_RULE), body) is None
    withdrawn = hl7(msh("ORU^R01"), PID, "OBX|1|NM|75323-6^x^LN||1||||||W")  # entered in error
    assert read(reader(ORU_RULE), withdrawn) is None
    assert read(reader(DEATH_RULE), body) is None  # type not configured: header only


def test_a_coded_value_and_a_local_code() -> None:
    rule = {
        "message": "ORU^R01",
        "code": "urn:hl7v2-local:99OUT|ICU48",
        "positive": ["Y"],
        "negative": ["N"],
    }
    body = hl7(msh("ORU^R01"), PID, "OBX|1|CWE|X^^L^ICU48^ICU in 48h^99OUT||N^No^HL70136||||||F")
    found = read(reader(rule), body)
    assert found is not None and [r.label for r in found["deterioration"]] == [0]


def test_a_death_at_discharge_labels_the_configured_model_timed_by_evn() -> None:
    body = hl7(
        msh("ADT^A03^ADT_A03"),
        "EVN|A03|20260316091500||||20260316090000",
        PID,
        "PV1|1|I|W3^12^1" + "|" * 33 + "20",
    )
    found = read(reader(DEATH_RULE, zone="Europe/Berlin"), body)
    berlin = timezone(timedelta(hours=1))
    assert found == {
        "mortality": [OutcomeReport("MRN-0815", 1, datetime(2026, 3, 16, 9, tzinfo=berlin))]
    }


def test_a_transfer_to_a_ward_is_no_outcome() -> None:
    body = hl7(msh("ADT^A02^ADT_A02"), "EVN|A02|20260316091500", PID, "PV1|1|I|W3^12^1")
    with pytest.raises(NoOutcome, match=r"PV1-3: not a configured outcome value"):
        read(reader(ICU_RULE), body)
    icu = hl7(msh("ADT^A02^ADT_A02"), "EVN|A02|20260316091500", PID, "PV1|1|I|MICU^2^1")
    found = read(reader(ICU_RULE), icu)
    assert found is not None and found["deterioration"][0].time == datetime(
        2026, 3, 16, 9, 15, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("body", "error", "problem"),
    [
        (hl7(msh("ADT^A03"), "EVN|A03|20260316091500", PID), NoOutcome, "no PV1 segment"),
        (
            hl7(msh("ADT^A03"), "PID|1||^^^HOSP^MR", "PV1|1|I|W" + "|" * 33 + "20"),
            NoPatient,
            "no PID-3",
        ),
        (
            hl7(msh("ORU^R01"), PID, "OBX|1|NM|75323-6^x^LN||1||||||F|||2026-03-16"),
            Hl7Error,
            "OBX-14: not an HL7 date/time",
        ),
        *(
            (
                hl7(msh("ORU^R01"), PID, f"OBX|1|NM|75323-6^x^LN||1||||||F|||{stamp}"),
                NoOutcome,
                "OBX-14: a time of only a year or a month",
            )
            for stamp in ("2026", "202603")
        ),
    ],
)
def test_what_is_not_an_outcome_says_why_without_a_value(
    body: bytes, error: type[AgentError], problem: str
) -> None:
    rules = reader(ORU_RULE, {**DEATH_RULE, "model": None})
    with pytest.raises(error, match=problem) as raised:
        read(rules, body)
    assert "MRN" not in str(raised.value) and "Doe" not in str(raised.value)


def test_no_time_anywhere_is_no_outcome() -> None:
    rule = {**DEATH_RULE, "time": ["EVN-6"]}
    body = hl7(msh("ADT^A03"), "EVN|A03|20260316091500", PID, "PV1|1|I|W" + "|" * 33 + "20")
    with pytest.raises(NoOutcome, match="no time in EVN-6"):
        read(reader(rule), body)


# --- the listener -----------------------------------------------------------------------
@dataclass
class OutcomeRecorder(RecordingScorer):
    """Scores as ``RecordingScorer`` does; keeps the outcomes recorded, or raises
    ``refuse`` when set."""

    recorded: list[tuple[str, OutcomeReport]] = field(default_factory=list)
    refuse: AgentError | None = None

    def record_outcomes(self, model: str, reports: Sequence[OutcomeReport]) -> OutcomeReceipt:
        if self.refuse is not None:
            raise self.refuse
        self.recorded += [(model, r) for r in reports]
        return OutcomeReceipt(len(reports), 0)  # nothing to join: still recorded


def exchange(port: int, *bodies: bytes) -> list[bytes]:
    with connect(port) as sock:
        sock.settimeout(10)
        sock.sendall(b"".join(SB + body + EB for body in bodies))
        pending = bytearray()
        return [read_frame(sock, pending) for _ in bodies]


def err_reasons(ack: bytes) -> list[str]:
    return [fields[8].split(":")[0] if len(fields) > 8 else "" for fields in segments(ack, "ERR")]


def test_listener_records_outcomes_and_scores_the_rest() -> None:
    recorder = OutcomeRecorder()
    outcome = hl7(msh("ORU^R01^ORU_R01"), PID, "OBX|1|NM|75323-6^x^LN||1||||||F")
    ward = hl7(msh("ADT^A02^ADT_A02"), "EVN|A02|20260316091500", PID, "PV1|1|I|W3^12^1")
    with running_listener(recorder, outcomes=[ORU_RULE, ICU_RULE]) as (listener, _):
        acks = exchange(listener.port, outcome, message("SCORE-1"), ward)
    assert [segments(a, "MSA")[0][1] for a in acks] == ["AA", "AA", "AE"]
    assert not segments(acks[0], "OBX")  # an outcome's AA carries no result
    assert segments(acks[1], "OBX")  # the scored message's does
    assert err_reasons(acks[2]) == ["no_outcome"]
    assert segments(acks[2], "MSA")[0][3].startswith("not recorded: no_outcome")
    assert recorder.recorded == [
        ("sepsis", OutcomeReport("MRN-0815", 1, datetime(2026, 3, 16, 8, tzinfo=UTC)))
    ]
    assert recorder.scored == ["SCORE-1"]
    assert ("sepsis", "no_outcome") in recorder.refusals


def test_listener_answers_not_enabled_when_the_site_keeps_no_predictions() -> None:
    recorder = OutcomeRecorder(refuse=NotEnabled("live performance is not enabled"))
    outcome = hl7(msh("ORU^R01^ORU_R01"), PID, "OBX|1|NM|75323-6^x^LN||1||||||F")
    with running_listener(recorder, outcomes=[ORU_RULE]) as (listener, _):
        [ack] = exchange(listener.port, outcome)
    assert segments(ack, "MSA")[0][1:4] == ["AE", "CTL-1", "not recorded: not_enabled"]
    assert err_reasons(ack) == ["not_enabled"]
    assert "MRN" not in ack.decode("latin-1")


def test_an_unreadable_outcome_message_is_rejected() -> None:
    recorder = OutcomeRecorder()
    bad = hl7(msh("ORU^R01^ORU_R01"), PID, "OBX|1|NM|75323-6^x^LN||1||||||Q")
    with running_listener(recorder, outcomes=[ORU_RULE]) as (listener, _):
        [ack] = exchange(listener.port, bad)
    assert segments(ack, "MSA")[0][1] == "AR" and not recorder.recorded
