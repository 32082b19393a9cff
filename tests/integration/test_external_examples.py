"""Records written outside this project (fixtures/external, see SOURCES.md) through the real
agent process (`edge-agent serve --config config/demo.yaml`): what can be scored is scored as
onnxruntime scores it, and what cannot is refused with a reason that names the place."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from tests.integration.agent_process import REPO, AgentProcess, demo_root, start_agent
from tests.integration.monitoring_traffic import END_BLOCK, START_BLOCK, mllp_send

pytestmark = pytest.mark.integration

EXTERNAL = REPO / "fixtures" / "external"
PREDICT = "/v1/models/deterioration/predict"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
SPEC_OBSERVATIONS = [
    "observation-example-heart-rate.json",
    "observation-example-respiratory-rate.json",
    "observation-example-body-temperature.json",
    "observation-example-bloodpressure.json",
    "observation-example-satO2.json",
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(demo_root(tmp_path_factory.mktemp("external")))
    yield process
    assert process.stop() == 0, process.log_text()


@pytest.fixture(scope="module")
def wide_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """The demo agent with the demo site's look-back windows widened (every other mapping line
    as shipped): the spec examples were measured in 1999, 2012 and 2014."""
    config = demo_root(tmp_path_factory.mktemp("external-wide"))
    mapping = config.parent / "mappings" / "demo-site.yaml"
    mapping.write_text(re.sub(r"window: \d+h", "window: 1000w", mapping.read_text()))
    process = start_agent(config)
    yield process
    assert process.stop() == 0, process.log_text()


def _spec_collection() -> bytes:
    """The R4 vital-signs examples and the R4 Patient example f001 as one collection; the
    Observations' subject (Patient/example, not in the stored mirrors) is pointed at f001."""
    patient = json.loads((EXTERNAL / "fhir" / "patient-example-f001-pieter.json").read_bytes())
    observations = [json.loads((EXTERNAL / "fhir" / n).read_bytes()) for n in SPEC_OBSERVATIONS]
    for observation in observations:
        observation["subject"] = {"reference": "Patient/f001"}
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in [patient, *observations]],
        }
    ).encode()


def _onnxruntime_probability(vector: list[float]) -> float:
    session = ort.InferenceSession(str(REPO / "fixtures/demo/model.onnx"))
    _, probabilities = session.run(None, {"X": np.array([vector], dtype=np.float32)})
    return float(probabilities[0][1])


def _diagnostics(response: object) -> str:
    outcome = response.json()  # type: ignore[attr-defined]
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0]["diagnostics"])


def test_synthea_child_is_refused_by_the_adult_model_naming_age(agent: AgentProcess) -> None:
    body = (EXTERNAL / "fhir" / "synthea-covid-juvenile-trimmed.json").read_bytes()
    with agent.client() as client:  # an hour after the encounter's vitals
        response = client.post(
            f"{PREDICT}?as_of=2020-03-07T19:01:22Z&explain=true", content=body, headers=FHIR_JSON
        )
    assert response.status_code == 422, response.text
    [issue] = response.json()["issue"]
    assert issue["details"]["text"] == "out_of_range" and issue["expression"] == ["age"]
    assert issue["diagnostics"].endswith(
        "feature 'age': value outside the plausible range [18, 110] a "
        "(a wrong unit or a typo?); the mapping says refuse"
    )


def test_spec_examples_score_with_their_printed_values(wide_agent: AgentProcess) -> None:
    with wide_agent.client() as client:
        response = client.post(
            f"{PREDICT}?as_of=2015-01-01T00:00:00Z&explain=true",
            content=_spec_collection(),
            headers=FHIR_JSON,
        )
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    values = {f["feature"]: f["model_value"] for f in prediction["explanation"]}
    assert values == {
        "heart_rate": 44.0,
        "respiratory_rate": 26.0,
        "body_temperature": 36.5,
        "systolic_bp": 107.0,
        "spo2": 95.0,
        "wbc": 8.0,
        "creatinine": 93.0,
        "age": 70.0,
        "sex": 1.0,
    }
    assert [(w["feature"], w["warning"]) for w in prediction["warnings"]] == [
        ("wbc", "imputed"),
        ("creatinine", "imputed"),
    ]
    assert prediction["outputs"]["probability_1"] == pytest.approx(
        _onnxruntime_probability(list(values.values())), abs=1e-5
    )


def test_spec_examples_at_the_demo_windows_get_422_naming_the_vital(agent: AgentProcess) -> None:
    with agent.client() as client:  # the end of the 1999 examples' day: BP (2012) is not yet
        response = client.post(
            f"{PREDICT}?as_of=1999-07-03T00:00:00Z", content=_spec_collection(), headers=FHIR_JSON
        )
    assert response.status_code == 422
    assert _diagnostics(response) == (
        "patient Patient/f001: "
        "feature 'systolic_bp': no value within the 24 h window before the as-of time; "
        "values exist outside it; "
        "feature 'spo2': no value within the 24 h window before the as-of time; "
        "values exist outside it"
    )


@pytest.mark.parametrize(
    "name",
    [
        "reportstream-elr-oru-r01-v251.hl7",
        "hl7-goja-adt-a01-v24.hl7",
        "jute-example-adt-a01-v23.hl7",
    ],
)
def test_hl7_without_vitals_gets_422_naming_the_feature(agent: AgentProcess, name: str) -> None:
    with agent.client() as client:
        response = client.post(
            f"{PREDICT}?as_of=2021-12-17T18:00:00Z",
            content=(EXTERNAL / "hl7" / name).read_bytes(),
            headers=ER7,
        )
    assert response.status_code == 422
    assert _diagnostics(response).split(": ", 1)[1] == "; ".join(
        f"feature {name!r}: no value in the record and the mapping says refuse"
        for name in ("heart_rate", "respiratory_rate", "body_temperature", "systolic_bp", "spo2")
    )


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        (
            "hl7/hl7-v251-standard-pmu-b01.hl7",
            ER7,
            "segment MSH #1, field MSH-9: message type not supported",
        ),
        (
            "hl7/jute-example-oru-r01-v23.hl7",
            ER7,
            "segment OBR #5, field OBR-3: field does not repeat in v2.3",
        ),
        (
            # the default validation checks what the demo mapping reads; the DSTU2 Patient's
            # bad elements are read by nothing there (tests/records covers it under full)
            "../fhir/invalid-observation.json",
            FHIR_JSON,
            "Observation at resource.effectiveDateTime: value does not match the FHIR datatype",
        ),
    ],
)
def test_unsupported_or_invalid_input_gets_400_saying_where(
    agent: AgentProcess, path: str, headers: dict[str, str], expected: str
) -> None:
    raw = (EXTERNAL / path).read_bytes()
    with agent.client() as client:
        response = client.post(
            f"{PREDICT}?as_of=2021-12-17T18:00:00Z", content=raw, headers=headers
        )
        assert client.get("/healthz").status_code == 200
    assert response.status_code == 400
    diagnostics = _diagnostics(response)
    assert diagnostics.startswith(expected)
    for value in ("HIPPOCRATES", "19511004", "X64489", "WANDA", "SECRET"):
        assert value not in diagnostics


def _mllp_port(agent: AgentProcess) -> int:
    return int(yaml.safe_load(agent.config_path.read_text())["mllp"]["port"])


@pytest.mark.parametrize(
    ("name", "msa", "detail"),
    [
        (
            "hl7-goja-adt-a01-v24.hl7",
            b"MSA|AE|934576120110613083617|not scored: missing: ",
            b"heart_rate",
        ),
        (
            "jute-example-adt-a01-v23.hl7",
            b"MSA|AE|00000000012988788|not scored: missing: ",
            b"heart_rate",
        ),
        (
            "jute-example-oru-r01-v23.hl7",
            b"MSA|AR|Q335939501T337311002|rejected: bad_input: ",
            b"OBR",
        ),
        ("hl7-v251-standard-pmu-b01.hl7", b"MSA|AR|MSGID002|rejected: bad_input\r", b"MSH-9"),
    ],
)
def test_hl7_over_mllp_is_acknowledged_with_the_reason(
    agent: AgentProcess, name: str, msa: bytes, detail: bytes
) -> None:
    """Over MLLP the ACK says AE/AR, the reason's category and the where and why (feature,
    segment, field): in MSA-3 before v2.5 (80 characters), in ERR-8 from v2.5 on."""
    ack = mllp_send("127.0.0.1", _mllp_port(agent), (EXTERNAL / "hl7" / name).read_bytes())
    assert msa in ack
    assert detail in ack
    for value in (b"HIPPOCRATES", b"Chalmers", b"19511004", b"X64489", b"WANDA"):
        assert value not in ack


def test_elr_that_asks_for_no_ack_gets_none(agent: AgentProcess) -> None:
    """The public-health ELR sets MSH-15 and MSH-16 to NE (its profile is PHLabReport-NoAck):
    the agent processes it and, as asked, answers nothing."""
    raw = (EXTERNAL / "hl7" / "reportstream-elr-oru-r01-v251.hl7").read_bytes()
    with socket.create_connection(("127.0.0.1", _mllp_port(agent)), timeout=1.5) as sock:
        sock.sendall(START_BLOCK + raw + END_BLOCK)
        with pytest.raises(TimeoutError):
            sock.recv(65536)


def test_fixtures_are_the_files_sources_md_lists() -> None:
    listed = set(
        re.findall(
            r"^\| (fhir/\S+|hl7/\S+) \|", (EXTERNAL / "SOURCES.md").read_text(), re.MULTILINE
        )
    )
    present = {
        str(p.relative_to(EXTERNAL))
        for p in EXTERNAL.rglob("*")
        if p.is_file() and p.suffix in {".json", ".hl7"}
    }
    assert listed == present


def test_no_fixture_is_over_500_kb() -> None:
    assert all(p.stat().st_size < 500_000 for p in Path(EXTERNAL).rglob("*") if p.is_file())
