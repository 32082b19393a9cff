"""Every record the project ships (its own FHIR and HL7 fixtures and the public examples in
fixtures/external) through the real process: never a 500, a 200 only when at least one
patient was scored, and over MLLP an AA only with a result for every patient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.agent_process import REPO, AgentProcess, demo_root, start_agent
from tests.integration.monitoring_traffic import config_for_traffic, mllp_send

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/deterioration/predict"
FIXTURES = REPO / "fixtures"
RECORDS = sorted(
    p
    for folder in ("fhir", "hl7", "external")
    for p in (FIXTURES / folder).rglob("*")
    if p.suffix in (".json", ".ndjson", ".hl7")
)
MEDIA = {
    ".json": "application/fhir+json",
    ".ndjson": "application/fhir+ndjson",
    ".hl7": "x-application/hl7-v2+er7",
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(demo_root(tmp_path_factory.mktemp("every"), config_for_traffic))
    yield process
    assert process.stop() == 0, process.log_text()


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: str(p.relative_to(FIXTURES)))
@pytest.mark.parametrize("as_of", ["", "?as_of=2026-03-15T12:00:00Z"])
def test_http_answers_every_fixture_without_500_and_200_only_when_scored(
    agent: AgentProcess, path: Path, as_of: str
) -> None:
    with agent.client() as client:
        response = client.post(
            PREDICT + as_of, content=path.read_bytes(), headers={"Content-Type": MEDIA[path.suffix]}
        )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        scored = [p for p in response.json()["predictions"] if p["status"] == "scored"]
        assert scored, response.text
    else:
        assert response.json()["resourceType"] == "OperationOutcome", response.text


@pytest.mark.parametrize(
    "path", [p for p in RECORDS if p.suffix == ".hl7"], ids=lambda p: str(p.relative_to(FIXTURES))
)
def test_mllp_answers_aa_only_with_a_result_per_patient(agent: AgentProcess, path: Path) -> None:
    port = int(yaml.safe_load(agent.config_path.read_text())["mllp"]["port"])
    ack = mllp_send("127.0.0.1", port, _original_mode(path.read_bytes())).decode(errors="replace")
    segments = [s.split("|") for s in ack.split("\r") if s]
    code = next(s[1] for s in segments if s[0] == "MSA")
    assert code in ("AA", "AE", "AR"), ack
    if code == "AA":
        assert any(s[0] == "OBX" for s in segments), ack  # ack_mode results: the outputs
    else:
        assert any(s[0] == "ERR" for s in segments), ack


def _original_mode(raw: bytes) -> bytes:
    """The message with MSH-15/16 emptied, so the application ACK (AA/AE/AR) comes back
    whatever acknowledgement mode the sample asked for."""
    segments = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    fields = segments[0].split(b"|")
    for number in (15, 16):  # MSH-n is fields[n - 1]: MSH-1 is the separator itself
        if len(fields) >= number:
            fields[number - 1] = b""
    return b"\r".join([b"|".join(fields), *segments[1:]])
