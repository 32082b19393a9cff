"""HL7 v2 read faithfully or not scored: an adversarial corpus made from the demo ORU^R01
(fixtures/hl7/oru-r01-v25.hl7) by breaking one field a feature reads at a time, scored by
the real pipeline with the demo site's mapping. Each case gets exactly one answer: the value
the message says, a refusal of the patient (reason and feature), or the message refused
as ``bad_input`` naming the segment and field. Never a score made from a value that is not
what the message says (docs/records.md, "Read faithfully, or not scored"). A few of the
cases go over MLLP too, where the answer is the ACK code and ERR, and through
``edge-agent score``, where it is the results line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import hl7.client
import pytest

from agent.cli import main
from agent.errors import AgentError
from agent.pipeline import ScoringPipeline
from agent.types import IntakePath, RecordFormat, ScoreRequest
from tests.intake.dropfolder_demo import demo_config
from tests.intake.mllp_support import EB, SB, msa, recent, running_listener, segments

MODEL = "deterioration"
AS_OF = datetime(2026, 3, 15, 12, tzinfo=UTC)  # the fixtures' clinical now
ORU = (Path(__file__).resolve().parents[2] / "fixtures/hl7/oru-r01-v25.hl7").read_text()
# The newest heart rate (segment #11): with ``reduce: latest`` the one the feature reads.
HR = "OBX|6|NM|8867-4^Heart rate^LN||104|/min^/min^UCUM|||||F|||20260315110000+0000"
OLDER_HR = 101.0  # the heart rate before it (07:00)
PATIENT = "PID|1||SYN-000417^^^GENERAL_HOSP^MR||Testpatient^Avery^Quinn^^Ms.^^L||19540722|F|"
OBR_7 = "8716-3^Vital signs^LN|||20260314140000+0000"


def heart_rate(
    value: str = "104",
    kind: str = "NM",
    unit: str = "/min^/min^UCUM",
    status: str = "F",
    when: str = "20260315110000+0000",
    code: str = "8867-4^Heart rate^LN",
) -> str:
    """The demo ORU with the newest heart rate's OBX-2, -3, -5, -6, -11 or -14 replaced."""
    return ORU.replace(HR, f"OBX|6|{kind}|{code}||{value}|{unit}|||||{status}|||{when}")


def patient(birth: str = "19540722", sex: str = "F", identifier: str = "SYN-000417") -> str:
    """The demo ORU with PID-3's CX.1, PID-7 or PID-8 replaced."""
    return ORU.replace(
        PATIENT,
        f"PID|1||{identifier}^^^GENERAL_HOSP^MR||Testpatient^Avery^Quinn^^Ms.^^L||{birth}|{sex}|",
    )


def scored(**features: float | str) -> tuple[str, dict[str, float | str]]:
    return ("scored", features)


def refused(reason: str, feature: str, says: str) -> tuple[str, str, str, str]:
    return ("refused", reason, feature, says)


def bad_input(where: str, says: str) -> tuple[str, str, str]:
    return ("bad_input", where, says)


NOT_A_NUMBER = refused("unmappable", "heart_rate", "carries a text or coded value, not a number")
COMPARATOR = refused("unmappable", "heart_rate", "carries a value with a comparator")
NM = bad_input("segment OBX #11, field OBX-5", "value is not a number (value type NM)")
NOT_A_TIME = bad_input("segment OBX #11, field OBX-14", "not an HL7 date/time")
# a value dated only to its day (or month): its day holds the as-of time (noon), so it may
# have been taken after it; read as midnight it would be scored as known before
COARSE_TIME = refused("unmappable", "heart_rate", "dated only to the day, which cannot place")
VALUE_TYPE = bad_input("segment OBX #11, field OBX-2", "value type not in HL7 table 0125")
UNIT = refused("unit", "heart_rate", "cannot be converted to /min")

CASES: dict[str, tuple[str, object]] = {
    "as sent": (ORU, scored(heart_rate=104.0, age=71.0, sex="female")),
    # OBX-5 under NM: a decimal, nothing else, finite
    "NM 12a": (heart_rate("12a"), NM),
    "NM decimal comma 1,5": (heart_rate("1,5"), NM),
    "NM 1.2.3": (heart_rate("1.2.3"), NM),
    "NM blanks": (heart_rate("  "), NM),
    "NM NaN": (heart_rate("NaN"), NM),
    "NM inf": (heart_rate("inf"), NM),
    "NM exponent 1e400": (heart_rate("1e400"), NM),
    "NM 400 digits (inf as a float)": (heart_rate("9" * 400), NM),
    "NM comparator >10": (heart_rate(">10"), NM),
    "NM comparator <=5": (heart_rate("<=5"), NM),
    "NM range 10-20": (heart_rate("10-20"), NM),
    "NM with a component 104^5": (heart_rate("104^5"), NM),
    "NM with a subcomponent 104&5": (heart_rate("104&5"), NM),
    "NM escaped field separator": (heart_rate("1\\F\\5"), NM),
    "NM repeated": (
        heart_rate("104~105"),
        bad_input("segment OBX #11, field OBX-5", "a numeric value cannot repeat"),
    ),
    "NM leading +": (heart_rate("+104"), scored(heart_rate=104.0)),
    "NM trailing blank": (heart_rate("104 "), scored(heart_rate=104.0)),
    "NM hex escape of 104": (heart_rate("\\X313034\\"), scored(heart_rate=104.0)),
    "NM empty (no value: the older one is the latest)": (
        heart_rate(""),
        scored(heart_rate=OLDER_HR),
    ),
    # OBX-5 under SN: the comparator, range and ratio are kept, so never read as one number
    "SN ^100": (heart_rate("^100", "SN"), scored(heart_rate=100.0)),
    "SN =^100": (heart_rate("=^100", "SN"), scored(heart_rate=100.0)),
    "SN >^100": (heart_rate(">^100", "SN"), COMPARATOR),
    "SN <^30": (heart_rate("<^30", "SN"), COMPARATOR),
    "SN >=^200": (heart_rate(">=^200", "SN"), COMPARATOR),
    "SN range ^10^-^20": (
        heart_rate("^10^-^20", "SN"),
        refused("unmappable", "heart_rate", "carries a range, not a number"),
    ),
    "SN ratio ^1^:^2": (
        heart_rate("^1^:^2", "SN"),
        refused("unmappable", "heart_rate", "carries a ratio, not a number"),
    ),
    "SN <>^100": (heart_rate("<>^100", "SN"), NOT_A_NUMBER),
    "SN ^^-^20": (heart_rate("^^-^20", "SN"), NOT_A_NUMBER),
    "SN ^2^+": (heart_rate("^2^+", "SN"), NOT_A_NUMBER),
    "SN ^1a": (
        heart_rate("^1a", "SN"),
        bad_input("segment OBX #11, field OBX-5.2", "value is not a number (value type SN)"),
    ),
    "SN repeated": (
        heart_rate("^100~^101", "SN"),
        bad_input("segment OBX #11, field OBX-5", "not a structured numeric"),
    ),
    # OBX-2: a number under another value type is not silently skipped
    "ST holding a number": (heart_rate("104", "ST"), NOT_A_NUMBER),
    "TX holding a number": (heart_rate("104", "TX"), NOT_A_NUMBER),
    "CWE": (heart_rate("104", "CWE"), NOT_A_NUMBER),
    "CE": (heart_rate("104^high^L", "CE"), NOT_A_NUMBER),
    "DTM": (
        heart_rate("202603151100", "DTM"),
        refused("unmappable", "heart_rate", "carries a date or time, not a number"),
    ),
    "ED, TM (kept as unsupported, not as no value)": (
        heart_rate("1100", "TM"),
        refused("unmappable", "heart_rate", "carries a value of a kind the agent does not read"),
    ),
    "value type empty": (heart_rate("104", ""), VALUE_TYPE),
    "value type XX": (heart_rate("104", "XX"), VALUE_TYPE),
    "value type lower case nm": (heart_rate("104", "nm"), VALUE_TYPE),
    "value type empty, no value": (heart_rate("", ""), scored(heart_rate=OLDER_HR)),
    # OBX-6
    "unit missing (the site's unit)": (heart_rate(unit=""), scored(heart_rate=104.0)),
    "unit free text": (heart_rate(unit="bpm"), UNIT),
    "unit UCUM without a system": (heart_rate(unit="/min"), scored(heart_rate=104.0)),
    "unit ISO+ /MIN": (heart_rate(unit="/MIN^per min^ISO+"), UNIT),
    "unit UCUM as the alternate": (
        heart_rate(unit="bpm^beats^L^/min^per min^UCUM"),
        scored(heart_rate=104.0),
    ),
    "unit 1/min": (heart_rate(unit="1/min^^UCUM"), scored(heart_rate=104.0)),
    "unit /h (converted, then implausible)": (
        heart_rate(unit="/h^^UCUM"),
        refused("out_of_range", "heart_rate", "outside the plausible range [20, 250] /min"),
    ),
    "unit escaped \\S\\": (heart_rate(unit="10\\S\\3/uL^^UCUM"), UNIT),
    "unit escaped \\T\\": (heart_rate(unit="/min\\T\\x^^UCUM"), UNIT),
    "unit escaped \\E\\": (heart_rate(unit="\\E\\min^^UCUM"), UNIT),
    "unit non-ASCII display": (heart_rate(unit="/min^Schläge/min^UCUM"), scored(heart_rate=104.0)),
    # OBX-3: only the mapped system|code is this feature's
    "code without a system": (  # LOINC's or a local code of the same spelling: not known
        heart_rate(code="8867-4^Heart rate"),
        refused("unmappable", "heart_rate", "a code without its coding system"),
    ),
    "code in a local system": (heart_rate(code="8867-4^HR^99LOC"), scored(heart_rate=OLDER_HR)),
    "code LOINC as the alternate": (
        heart_rate(code="HR^Heart rate^L^8867-4^Heart rate^LN"),
        scored(heart_rate=104.0),
    ),
    # OBX-11: a result withdrawn, deleted, cancelled or not yet there is no value
    "status W": (heart_rate(status="W"), scored(heart_rate=OLDER_HR)),
    "status D": (heart_rate(status="D"), scored(heart_rate=OLDER_HR)),
    "status X": (heart_rate(status="X"), scored(heart_rate=OLDER_HR)),
    "status N": (heart_rate(status="N"), scored(heart_rate=OLDER_HR)),
    "status I (pending)": (heart_rate(status="I"), scored(heart_rate=OLDER_HR)),
    "status O (order only)": (heart_rate(status="O"), scored(heart_rate=OLDER_HR)),
    "status P": (heart_rate(status="P"), scored(heart_rate=104.0)),
    "status C": (heart_rate(status="C"), scored(heart_rate=104.0)),
    "status blank": (
        heart_rate(status=""),
        bad_input("segment OBX #11, field OBX-11", "required field is empty"),
    ),
    "status Q": (
        heart_rate(status="Q"),
        bad_input("segment OBX #11, field OBX-11", "not in HL7 table 0085"),
    ),
    # OBX-14 (and OBR-7): a time a value can be placed by
    "time truncated 2026031": (heart_rate(when="2026031"), NOT_A_TIME),
    "time a month": (
        heart_rate(when="202603"),
        refused("unmappable", "heart_rate", "dated only to the month"),
    ),
    "time a day": (heart_rate(when="20260315"), COARSE_TIME),
    "time an hour": (heart_rate(when="2026031511"), COARSE_TIME),
    "time a minute": (heart_rate(when="202603151100"), scored(heart_rate=104.0)),
    "time fractional seconds": (
        heart_rate(when="20260315110000.1234+0000"),
        scored(heart_rate=104.0),
    ),
    "time without offset (UTC here)": (heart_rate(when="20260315110000"), scored(heart_rate=104.0)),
    "time +0100": (heart_rate(when="20260315110000+0100"), scored(heart_rate=104.0)),
    "time -0500 (after the as-of time)": (
        heart_rate(when="20260315110000-0500"),
        scored(heart_rate=OLDER_HR),
    ),
    "time +1400 (before 07:00)": (
        heart_rate(when="20260315110000+1400"),
        scored(heart_rate=OLDER_HR),
    ),
    "time a year ahead": (heart_rate(when="20270315110000+0000"), scored(heart_rate=OLDER_HR)),
    "time offset -05": (heart_rate(when="20260315110000-05"), NOT_A_TIME),
    "time offset +0160": (heart_rate(when="20260315110000+0160"), NOT_A_TIME),
    "time offset +9999": (heart_rate(when="20260315110000+9999"), NOT_A_TIME),
    "time offset +1500": (
        heart_rate(when="20260315110000+1500"),
        bad_input(
            "Observation at segment OBX #11, element Observation.effectiveDateTime",
            "value does not match the FHIR datatype",
        ),
    ),
    "time month 13": (heart_rate(when="20261315110000+0000"), NOT_A_TIME),
    "time 30 February": (heart_rate(when="20260230110000+0000"), NOT_A_TIME),
    "time hour 24": (heart_rate(when="20260315240000+0000"), NOT_A_TIME),
    "time second 60": (heart_rate(when="20260315115960+0000"), NOT_A_TIME),
    "time none: OBR-7's": (heart_rate(when=""), scored(heart_rate=OLDER_HR)),
    "time a day, no value": (heart_rate("", when="20260315"), scored(heart_rate=OLDER_HR)),
    "time a day, wholly before the window": (
        heart_rate(when="20260310"),  # placed: too old to count, the 07:00 value is latest
        scored(heart_rate=OLDER_HR),
    ),
    "OBR-7 a day, every OBX its own time": (
        ORU.replace(OBR_7, "8716-3^Vital signs^LN|||20260315"),
        scored(heart_rate=104.0),
    ),
    "time none, OBR-7 a day": (
        heart_rate(when="").replace(OBR_7, "8716-3^Vital signs^LN|||20260315"),
        COARSE_TIME,
    ),
    # PID-7, PID-8, PID-3
    "birth a year (71 or 72)": (
        patient(birth="1954"),
        refused("unmappable", "age", "gives only a year or a month"),
    ),
    "birth a month (71 or 72)": (
        patient(birth="195403"),
        refused("unmappable", "age", "gives only a year or a month"),
    ),
    "birth a month (72 either way)": (patient(birth="195402"), scored(age=72.0)),
    "birth a month (71 either way)": (patient(birth="195407"), scored(age=71.0)),
    "birth with a time and offset": (patient(birth="195407222359-1200"), scored(age=71.0)),
    "birth month 13": (
        patient(birth="19541322"),
        bad_input("segment PID #2, field PID-7", "not an HL7 date/time"),
    ),
    "birth ISO dashes": (
        patient(birth="1954-07-22"),
        bad_input("segment PID #2, field PID-7", "not an HL7 date/time"),
    ),
    "birth in the future": (
        patient(birth="20300101"),
        refused("out_of_range", "age", "outside the plausible range [18, 110] a"),
    ),
    "birth missing": (patient(birth=""), refused("missing", "age", "no value in the record")),
    "sex U": (patient(sex="U"), refused("unseen_category", "sex", "does not list")),
    "sex X": (patient(sex="X"), refused("unseen_category", "sex", "does not list")),
    "sex lower case f": (
        patient(sex="f"),
        bad_input("segment PID #2, field PID-8", "not in HL7 table 0001"),
    ),
    "sex missing": (patient(sex=""), refused("missing", "sex", "no value in the record")),
    "PID-3 without CX.1": (
        patient(identifier=""),
        bad_input("segment PID #2, field PID-3", "no identifier (CX.1)"),
    ),
    # the same code more than once: ordered by time, not by segment; one time, one value
    "the newest sent first": (
        ORU.replace(HR + "\n", "").replace(OBR_7 + "\n", OBR_7 + "\n" + HR + "\n"),
        scored(heart_rate=104.0),
    ),
    "a correction of the same time": (
        ORU.replace(HR, HR + "\n" + HR.replace("||104|", "||150|").replace("|F|||", "|C|||")),
        scored(heart_rate=150.0),
    ),
    "the same value sent twice": (ORU.replace(HR, HR + "\n" + HR), scored(heart_rate=104.0)),
    "two final values of the same time": (
        ORU.replace(HR, HR + "\n" + HR.replace("||104|", "||150|")),
        refused("unmappable", "heart_rate", "two different values at the time latest takes"),
    ),
    "a final value after the correction": (
        ORU.replace(HR, HR.replace("||104|", "||150|").replace("|F|||", "|C|||") + "\n" + HR),
        refused("unmappable", "heart_rate", "neither a correction"),
    ),
    # MSH-18 and MSH-2
    "ISO 8859-1 declared": (
        ORU.replace("|AL|NE", "|AL|NE||8859/1").replace("Avery", "Avéry"),
        scored(heart_rate=104.0),
    ),
    "other encoding characters": (
        ORU.replace("[#/volume]", "").replace("^", "#"),
        scored(heart_rate=104.0, age=71.0),
    ),
}


def _score(pipeline: ScoringPipeline, text: str) -> object:
    """The answer as the case table writes it."""
    encoding = "latin-1" if "8859/1" in text else "utf-8"
    request = ScoreRequest(
        model=MODEL,
        body=text.encode(encoding),
        format=RecordFormat.hl7v2,
        intake=IntakePath.http,
        as_of=AS_OF,
    )
    try:
        result = pipeline.score(request)
    except AgentError as exc:
        where, _, says = str(exc).partition(": ")
        return exc.reason, where, says
    (outcome,) = result.outcomes
    if outcome.refusal is not None:
        return outcome.refusal.reason, outcome.refusal.feature, outcome.refusal.detail
    assert outcome.prediction is not None
    return {f.name: f.display for f in outcome.prediction.vector.features}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_every_case_gets_the_faithful_answer(
    pipeline: ScoringPipeline, text: str, expected: tuple[object, ...]
) -> None:
    answer = _score(pipeline, text)
    if expected[0] == "scored":
        assert isinstance(answer, dict), answer
        features = expected[1]
        assert isinstance(features, dict)
        assert {name: answer[name] for name in features} == features
    elif expected[0] == "refused":
        _, reason, feature, says = expected
        assert isinstance(answer, tuple), answer
        assert answer[:2] == (reason, feature)
        assert isinstance(says, str) and says in answer[2]
    else:
        _, where, says = expected
        assert isinstance(answer, tuple), answer
        assert answer[0] == "bad_input"
        assert isinstance(where, str) and isinstance(says, str)
        assert answer[1] == where and says in answer[2]


@pytest.fixture
def client(pipeline: ScoringPipeline) -> Iterator[hl7.client.MLLPClient]:
    with (
        running_listener(pipeline, model=MODEL) as (listener, _),
        hl7.client.MLLPClient("127.0.0.1", listener.port) as mllp,
    ):
        yield mllp


@pytest.mark.parametrize(
    ("case", "code", "reason", "says"),
    [
        ("SN >^100", "AE", "unmappable", "feature 'heart_rate'"),
        ("ST holding a number", "AE", "unmappable", "feature 'heart_rate'"),
        ("birth a year (71 or 72)", "AE", "unmappable", "feature 'age'"),
        ("NM 400 digits (inf as a float)", "AR", "bad_input", "field OBX-5"),
        ("status W", "AA", None, None),
    ],
)
def test_over_mllp_the_ack_names_the_reason(
    client: hl7.client.MLLPClient, case: str, code: str, reason: str | None, says: str | None
) -> None:
    """Over MLLP (times moved to two hours ago: the listener scores as of now) the same
    cases are answered AE (the patient refused) or AR (the message unreadable), with the
    reason in MSA-3 and the where in ERR-8; the value is never echoed."""
    text, _ = CASES[case]
    ack = client.send_message(recent(text.encode())).strip(SB + EB)
    assert msa(ack)[1] == code
    if reason is None:
        assert not segments(ack, "ERR")
        return
    assert msa(ack)[3].endswith(f": {reason}")
    (err,) = segments(ack, "ERR")
    assert says in err[8]
    assert b"SYN-000417" not in ack


def test_over_mllp_a_value_dated_only_today_is_refused(client: hl7.client.MLLPClient) -> None:
    """The listener scores as of now: a heart rate dated only to today may have been taken
    later today, so the patient is refused (AE) naming the feature, never the value."""
    today = datetime.now(UTC).strftime("%Y%m%d")
    ack = client.send_message(recent(heart_rate(when=today).encode())).strip(SB + EB)
    assert msa(ack)[1] == "AE" and msa(ack)[3].endswith(": unmappable")
    (err,) = segments(ack, "ERR")
    assert "feature 'heart_rate'" in err[8] and "dated only to the day" in err[8]
    assert b"SYN-000417" not in ack and b"104" not in err[8].encode()


ON_EVERY_PATH = [
    "SN >^100",
    "ST holding a number",
    "birth a year (71 or 72)",
    "time a day",
    "status W",
    "NM 400 digits (inf as a float)",
    "two final values of the same time",
]


def test_edge_agent_score_answers_as_the_pipeline(
    pipeline: ScoringPipeline, tmp_path: Path
) -> None:
    """The files ``edge-agent score`` (and the drop folder, the same batch engine) reads get
    the same reason and feature per case as the pipeline called directly."""
    config = demo_config(tmp_path / "agent", {"model": MODEL, "outputs": ["ndjson"]})
    files = []
    for number, case in enumerate(ON_EVERY_PATH):
        files.append(tmp_path / f"case{number}.hl7")
        files[-1].write_text(CASES[case][0])
    argv = ["score", "-c", str(config), "-o", str(tmp_path / "out"), "-q"]
    main([*argv, "--as-of", AS_OF.isoformat(), *map(str, files)])
    for case, file in zip(ON_EVERY_PATH, files, strict=True):
        (line,) = (tmp_path / "out" / f"{file.name}.results.ndjson").read_text().splitlines()
        result = json.loads(line)
        direct = _score(pipeline, CASES[case][0])
        if isinstance(direct, dict):
            assert result["status"] == "ok", case
        else:
            assert (result["status"], result["reason"]) == ("error", direct[0]), case
            assert result.get("feature") == (direct[1] if direct[0] != "bad_input" else None)
