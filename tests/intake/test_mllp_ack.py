"""The ACK builder: header parsing on any input, addressing, escaping, version-shaped ERR,
the enhanced-mode matrix, and ACKs that real HL7 parsers (hl7apy, python-hl7) read back."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest
from hl7apy.parser import parse_message
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import (
    AgentError,
    Hl7Error,
    InternalError,
    ModelDeadline,
    NoPatient,
    UnknownModel,
    UnsupportedMediaType,
)
from agent.hl7.ack import (
    AckCode,
    AckCondition,
    AckError,
    ResultRow,
    build_ack,
    escape,
    parse_header,
)
from agent.intake.mllp.acks import Outcome, acknowledgements, outcome_of_error
from agent.intake.mllp.config import AckMode
from agent.types import FeatureVector, Prediction
from tests.intake.mllp_support import message, msa, segments

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def test_header_fields() -> None:
    header = parse_header(message("ABC123", version="2.5.1", accept_ack="AL", application_ack="NE"))
    assert header is not None
    assert (header.sending_application, header.sending_facility) == ("LAB", "HOSP")
    assert (header.receiving_application, header.receiving_facility) == ("EDGE", "ICU")
    assert header.control_id == "ABC123" and header.version == "2.5.1"
    assert header.trigger_event == "R01"
    assert header.accept_ack is AckCondition.always
    assert header.application_ack is AckCondition.never
    assert header.enhanced_mode


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"MSH",
        b"MSH|",
        b"MSHa^~\\&|x",
        b"MSH|^~|too-short-encoding",
        b"PID|1||x\rMSH|^~\\&|A",
        b"\x00\xff" * 100,
        b"MSH|^|~\\&|x",
    ],
)
def test_no_usable_header(raw: bytes) -> None:
    assert parse_header(raw) is None


def test_header_after_bom_whitespace_and_in_batches() -> None:
    assert parse_header(b"\xef\xbb\xbf\r\n" + message("X1")).control_id == "X1"  # type: ignore[union-attr]
    batch = b"BHS|^~\\&|LAB|HOSP|EDGE|ICU|2026||||BATCH7\r" + message("M1") + b"BTS|1\r"
    header = parse_header(batch)
    assert header is not None and header.segment == "BHS"
    assert (header.control_id, header.sending_application) == ("BATCH7", "LAB")


def test_ack_swaps_addresses_and_echoes() -> None:
    header = parse_header(message("C1", version="2.3"))
    ack = build_ack(header, AckCode.accept, now=NOW, control_id="ACK1")
    (msh,) = segments(ack, "MSH")
    assert msh[3:13] == [
        "EDGE",
        "ICU",
        "LAB",
        "HOSP",
        "20261130120000+0000",
        "",
        "ACK^R01",
        "ACK1",
        "P",
        "2.3",
    ]
    assert msa(ack) == ["MSA", "AA", "C1"]
    assert ack.endswith(b"\r")


def test_custom_delimiters_and_non_ascii_bytes_round_trip() -> None:
    raw = "MSH#*~\\&#LAB#Hôpital Saint-Éloi#EDGE#ICU#2026##ORU*R01#C9#P#2.5######UNICODE UTF-8\r"
    header = parse_header(raw.encode("utf-8"))
    assert header is not None and header.field_sep == "#"
    ack = build_ack(
        header, AckCode.error, errors=[AckError("207", "Application internal error", "unmappable")]
    )
    assert "Hôpital Saint-Éloi".encode() in ack  # echoed byte for byte
    text = ack.decode("utf-8")
    assert "#ACK*R01*ACK#" in text and "#UNICODE UTF-8\r" in text
    assert "MSA#AE#C9#not scored: unmappable" in text
    assert "ERR###207*Application internal error*HL70357#E#unmappable###unmappable" in text


def test_escaping() -> None:
    assert escape("a|b^c~d\\e&f\rg", "|", "^~\\&") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f g"


def test_err_before_v25_uses_err_1() -> None:
    ack = build_ack(
        parse_header(message("O1", version="2.4")),
        AckCode.reject,
        errors=[AckError("102", "Data type error", "bad_input")],
    )
    (err,) = segments(ack, "ERR")
    assert err == ["ERR", "^^^102&Data type error&HL70357"]


def test_minimal_ack_without_header() -> None:
    ack = build_ack(
        None,
        AckCode.reject,
        errors=[AckError("100", "Segment sequence error", "bad_input")],
        now=NOW,
    )
    (msh,) = segments(ack, "MSH")
    assert msh[1:3] == ["|", "^~\\&"] and msh[9] == "ACK" and msh[12] == "2.5"
    assert msa(ack)[1:3] == ["AR", ""]


def test_result_values_are_plain_decimals() -> None:
    rows = [ResultRow(1, "p", v, "m", "1.0.0") for v in (1e-9, 0.125, 3.0, -0.0, float("nan"))]
    ack = build_ack(parse_header(message("V")), AckCode.accept, results=rows)
    assert [o[5] for o in segments(ack, "OBX")] == ["0.000000001", "0.125", "3", "0", ""]


def test_acks_parse_with_hl7apy_and_python_hl7() -> None:
    header = parse_header(message("P1", version="2.5"))
    error = AckError("207", "Application internal error", "deadline")
    for code in (AckCode.accept, AckCode.error, AckCode.reject):
        ack = build_ack(header, code, errors=[] if code is AckCode.accept else [error])
        parsed = parse_message(ack.decode("latin-1"), find_groups=False)
        assert parsed.msa.msa_1.value == code.value
        assert parsed.msa.msa_2.value == "P1"
        assert parsed.msh.msh_9.to_er7() == "ACK^R01^ACK"
    results = [ResultRow(1, "risk", 0.5, "sepsis", "1.0.0")]
    ack = build_ack(header, AckCode.accept, results=results)
    assert str(hl7.parse(ack.decode())["OBX"][0][5]) == "0.5"


def _prediction() -> Prediction:
    return Prediction("sepsis", "1.0.0", "d" * 64, {"risk": 0.25}, FeatureVector((), ()))


@pytest.mark.parametrize(
    ("accept", "application", "outcome", "codes"),
    [
        ("", "", Outcome(AckCode.accept), ["AA"]),
        ("AL", "AL", Outcome(AckCode.accept), ["CA", "AA"]),
        ("AL", "", Outcome(AckCode.accept), ["CA", "AA"]),  # empty counts as AL
        ("NE", "NE", Outcome(AckCode.accept), []),
        ("SU", "ER", Outcome(AckCode.accept), ["CA"]),
        ("ER", "SU", Outcome(AckCode.accept), ["AA"]),
        ("ER", "ER", outcome_of_error(Hl7Error("x")), ["CR", "AR"]),
        ("AL", "NE", outcome_of_error(RuntimeError("bug")), ["CE"]),
        ("ER", "AL", outcome_of_error(ModelDeadline("x")), ["AE"]),
    ],
)
def test_enhanced_mode_matrix(
    accept: str, application: str, outcome: Outcome, codes: list[str]
) -> None:
    header = parse_header(message("E", accept_ack=accept, application_ack=application))
    acks = acknowledgements(header, outcome, AckMode.results)
    assert [msa(a)[1] for a in acks] == codes


def test_error_mapping() -> None:
    cases: list[tuple[Exception, str, str, str]] = [
        (Hl7Error("x"), "AR", "102", "bad_input"),
        (UnsupportedMediaType("x"), "AR", "200", "unsupported_media_type"),
        (UnknownModel("x"), "AE", "207", "unknown_model"),
        (AgentError("x"), "AE", "207", "agent_error"),
        (ValueError("x"), "AR", "207", "internal"),
        (InternalError("x"), "AR", "207", "internal"),
        (NoPatient("x"), "AE", "100", "no_patient"),
    ]
    for exc, code, hl7_code, reason in cases:
        outcome = outcome_of_error(exc)
        [error] = outcome.errors
        assert (outcome.code.value, error.hl7_code, error.reason) == (code, hl7_code, reason)


def test_results_only_on_aa_in_results_mode() -> None:
    header = parse_header(message("R"))
    ok = Outcome(AckCode.accept, predictions=[_prediction(), _prediction()])
    (with_results,) = acknowledgements(header, ok, AckMode.results)
    assert [o[4] for o in segments(with_results, "OBX")] == ["1", "2"]  # OBX-4: prediction
    (plain,) = acknowledgements(header, ok, AckMode.plain)
    assert segments(plain, "OBX") == []


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400)
    | st.builds(
        lambda a, b: b"MSH" + a + b"|^~\\&|" + b, st.binary(max_size=3), st.binary(max_size=300)
    )
)
def test_any_input_gets_a_well_formed_answer(raw: bytes) -> None:
    header = parse_header(raw)
    for code in AckCode:
        ack = build_ack(
            header, code, errors=[AckError("100", "Segment sequence error", "bad_input")]
        )
        lines = ack.split(b"\r")
        assert lines[0].startswith(b"MSH") and lines[1].startswith(b"MSA")
        assert (b"\x1c" not in ack and b"\x0b" not in ack) or (header is not None)
        fs = header.field_sep if header else "|"
        assert lines[1].decode("latin-1").split(fs)[1] == code.value
