"""MLLP end to end with the real scoring pipeline: the demo bundle signed with a fresh key,
installed in a store, scored in wasmtime with the demo site's mapping, acknowledged over a
socket, measured by the monitor, and reported as an ORU^R01 to an outbound destination."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hl7.client
import pytest
from hl7apy.parser import parse_message

from agent.pipeline import ScoringPipeline
from tests.intake.mllp_support import (
    EB,
    SB,
    Destination,
    fixture_message,
    msa,
    running_listener,
    segments,
    wait_for,
)

MODEL = "deterioration"


@pytest.fixture
def client(pipeline: ScoringPipeline) -> Iterator[hl7.client.MLLPClient]:
    with (
        running_listener(pipeline, model=MODEL) as (listener, _),
        hl7.client.MLLPClient("127.0.0.1", listener.port) as mllp,
    ):
        yield mllp


def ack_of(answer: bytes) -> bytes:
    return answer.strip(SB + EB)


def test_oru_is_scored_and_the_results_come_back(
    pipeline: ScoringPipeline, client: hl7.client.MLLPClient
) -> None:
    labels = {"model": MODEL, "version": "1.0.0", "intake": "mllp"}
    registry = pipeline.monitor.registry
    before = registry.get_sample_value("edge_agent_predictions_total", labels) or 0
    ack = ack_of(client.send_message(fixture_message("oru-r01-v25.hl7")))
    assert msa(ack)[1:3] == ["AA", "ORU0000417"]
    results = {o[3].split("^")[0]: float(o[5]) for o in segments(ack, "OBX")}
    assert set(results) == {o.name for o in pipeline.served(MODEL).bundle.manifest.outputs}
    assert results["probability_0"] + results["probability_1"] == pytest.approx(1.0, abs=1e-5)
    assert b"SYN-000417" not in ack and b"Testpatient" not in ack
    assert registry.get_sample_value("edge_agent_predictions_total", labels) == before + 1
    assert registry.get_sample_value("edge_agent_drift_window_records", {"model": MODEL}) >= 1
    drift = pipeline.monitor.snapshot()["models"][MODEL]["features"]
    assert set(drift) == {f.name for f in pipeline.served(MODEL).bundle.manifest.inputs}


def test_enhanced_mode_fixture_gets_its_commit_ack(client: hl7.client.MLLPClient) -> None:
    ack = ack_of(client.send_message(fixture_message("oru-r01-v25.hl7", original_mode=False)))
    assert msa(ack)[1:3] == ["CA", "ORU0000417"]  # MSH-15 AL, MSH-16 NE: accept ack only


def test_unscorable_and_unreadable_messages(
    pipeline: ScoringPipeline, client: hl7.client.MLLPClient
) -> None:
    registry = pipeline.monitor.registry
    admission = ack_of(client.send_message(fixture_message("adt-a01-v25.hl7")))
    # An admission carries no vitals, which the demo mapping requires.
    assert msa(admission)[1:4] == ["AE", "ADT0000417", "not scored: missing"]
    assert (
        registry.get_sample_value(
            "edge_agent_errors_total", {"model": MODEL, "intake": "mllp", "reason": "missing"}
        )
        >= 1
    )
    malformed = ack_of(client.send_message(fixture_message("malformed-obx-value.hl7")))
    assert msa(malformed)[1:4] == ["AR", "BAD0000001", "rejected: bad_input"]
    assert b"SECRET" not in malformed
    after = ack_of(client.send_message(fixture_message("oru-r01-v25.hl7")))
    assert msa(after)[1] == "AA"  # the connection carries on


def test_results_go_to_the_destination_as_the_ack_has_them(
    pipeline: ScoringPipeline, tmp_path: Path
) -> None:
    with (
        Destination("AA") as dest,
        running_listener(
            pipeline,
            model=MODEL,
            results_to={"host": "127.0.0.1", "port": dest.port, "spool": tmp_path / "spool"},
        ) as (listener, _),
        hl7.client.MLLPClient("127.0.0.1", listener.port) as client,
    ):
        ack = ack_of(client.send_message(fixture_message("oru-r01-v25.hl7")))
        wait_for(lambda: len(dest.received) == 1)
    (oru,) = dest.received
    assert msa(ack)[1] == "AA"
    in_ack = {o[3].split("^")[0]: o[5] for o in segments(ack, "OBX")}
    assert {o[3].split("^")[0]: o[5] for o in segments(oru, "OBX")} == in_ack
    (pid,) = segments(oru, "PID")
    assert pid == ["PID", "1", "", "SYN-000417^^^GENERAL_HOSP^MR"]
    (obr,) = segments(oru, "OBR")
    assert (obr[2], obr[3]) == ("ORD-VS-1", "FIL-VS-1")
    digest = pipeline.served(MODEL).bundle.digest
    assert [n[3] for n in segments(oru, "NTE")] == [
        "source message control id ORU0000417",
        f"model {MODEL} 1.0.0 bundle sha256:{digest}",
    ]
    for phi in (b"Testpatient", b"19540722", b"Sample Street", b"V000417", b"Attending"):
        assert phi not in oru
    parse_message(oru.decode("latin-1"), find_groups=True)


def test_an_outcome_message_to_a_site_without_live_performance(pipeline: ScoringPipeline) -> None:
    """The real pipeline keeps no predictions here: the outcome is answered AE
    ``not_enabled`` and counted, while the same listener still scores its other messages."""
    rule = {"message": "ORU^R01", "code": "loinc|75323-6", "positive": ["1"]}
    outcome = (
        b"MSH|^~\\&|EHR|HOSP|EDGE|HOSP|20260316080000||ORU^R01|OUT-1|P|2.5\r"
        b"PID|1||SYN-000417^^^HOSP^MR\rOBX|1|NM|75323-6^Outcome^LN||1||||||F\r"
    )
    labels = {"model": MODEL, "intake": "mllp", "reason": "not_enabled"}
    registry = pipeline.monitor.registry
    before = registry.get_sample_value("edge_agent_errors_total", labels) or 0
    with (
        running_listener(pipeline, model=MODEL, outcomes=[rule]) as (listener, _),
        hl7.client.MLLPClient("127.0.0.1", listener.port) as mllp,
    ):
        refused = ack_of(mllp.send_message(outcome))
        scored = ack_of(mllp.send_message(fixture_message("oru-r01-v25.hl7")))
    assert msa(refused)[1:4] == ["AE", "OUT-1", "not recorded: not_enabled"]
    assert b"SYN-000417" not in refused
    assert msa(scored)[1] == "AA"
    assert registry.get_sample_value("edge_agent_errors_total", labels) == before + 1
