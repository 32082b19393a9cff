"""Results as ORU^R01 to an outbound MLLP destination, on real sockets: a destination that
accepts, one that refuses, one that is down and comes up, the spool across a restart of the
sender, the ORU read by hl7apy; and a frame arriving while the listener stops."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hl7apy.parser import parse_message
from pydantic import ValidationError

from agent.config import load_config
from agent.durable import temp_name
from agent.errors import ConfigError, Hl7Error
from agent.hl7.oru import build_result_message
from agent.intake.mllp.config import MllpConfig, ResultsDestination
from agent.intake.mllp.results import ResultSender, ResultSpool
from agent.limits import Limits
from agent.types import FeatureVector, Prediction
from tests.intake.mllp_support import (
    EB,
    SB,
    Destination,
    RecordingScorer,
    connect,
    free_port,
    message,
    msa,
    read_frame,
    running_listener,
    segments,
    self_signed_cert,
    wait_for,
)


def results_to(spool: Path, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "spool": spool,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "ack_timeout": 2,
        **extra,
    }


def send(port: int, *control_ids: str) -> list[bytes]:
    """Send messages over one connection; their ACKs."""
    sock, pending = connect(port), bytearray()
    acks = []
    for control_id in control_ids:
        sock.sendall(SB + message(control_id) + EB)
        acks.append(read_frame(sock, pending))
    sock.close()
    return acks


def spooled(spool: Path) -> list[Path]:
    """Every file in the spool folder (temp files included), sorted."""
    return sorted(p for p in spool.glob("*") if p.is_file())


def test_results_reach_an_accepting_destination_in_order_as_oru(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with (
        Destination("AA") as dest,
        running_listener(RecordingScorer(), results_to=results_to(spool, dest.port)) as (
            listener,
            _,
        ),
    ):
        acks = send(listener.port, "C1", "C2", "C3")
        wait_for(lambda: len(dest.received) == 3)
        wait_for(lambda: spooled(spool) == [])
    assert [msa(a)[1:3] for a in acks] == [["AA", "C1"], ["AA", "C2"], ["AA", "C3"]]
    assert [m.split(b"\r")[3].split(b"|")[3] for m in dest.received] == [
        b"source message control id C1",
        b"source message control id C2",
        b"source message control id C3",
    ]
    oru = dest.received[0]
    parsed = parse_message(oru.decode("latin-1"), find_groups=True)
    assert parsed.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert parsed.msh.msh_3.to_er7() == "EDGE" and parsed.msh.msh_5.to_er7() == "LAB"
    assert parsed.msh.msh_4.to_er7() == "ICU" and parsed.msh.msh_6.to_er7() == "HOSP"
    assert parsed.msh.msh_10.to_er7() not in ("C1", "")
    result = parsed.oru_r01_patient_result
    assert result.oru_r01_patient.pid.pid_3.to_er7() == "MRN-4711^^^HOSP^MR"
    order = result.oru_r01_order_observation
    assert order.obr.obr_4.to_er7() == "sepsis^sepsis^L" and order.obr.obr_25.to_er7() == "F"
    notes = [n.nte_3.to_er7() for n in order.children if n.name == "NTE"]
    assert notes == ["source message control id C1", f"model sepsis 1.2.0 bundle sha256:{'d' * 64}"]
    observations = [o.obx for o in order.children if o.name == "ORU_R01_OBSERVATION"]
    assert [
        (o.obx_3.obx_3_1.to_er7(), o.obx_5.to_er7(), o.obx_17.to_er7()) for o in observations
    ] == [
        ("risk", "0.125", "sepsis^sepsis 1.2.0^L"),
        ("risk\\F\\untreated", "0.5", "sepsis^sepsis 1.2.0^L"),
    ]
    assert b"Doe" not in oru and b"19500101" not in oru  # only PID-3 leaves


def test_a_refused_result_moves_to_rejected_with_its_ack_and_is_not_retried(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    with (
        Destination("AE") as dest,
        running_listener(RecordingScorer(), results_to=results_to(spool, dest.port)) as (
            listener,
            _,
        ),
    ):
        send(listener.port, "R1")
        wait_for(lambda: len(list((spool / "rejected").glob("*.ack"))) == 1)
        time.sleep(0.3)  # a retry would have happened by now
        assert len(dest.received) == 1
    (rejected,) = (spool / "rejected").glob("*.hl7")
    assert rejected.read_bytes() == dest.received[0]
    ack = rejected.with_suffix(".ack").read_bytes()
    assert msa(ack)[1] == "AE" and spooled(spool) == []
    assert (spool.stat().st_mode & 0o777, rejected.stat().st_mode & 0o777) == (0o700, 0o600)


def test_results_wait_for_a_destination_that_is_down_then_arrive_once_in_order(
    tmp_path: Path,
) -> None:
    spool, port = tmp_path / "spool", free_port()
    with running_listener(RecordingScorer(), results_to=results_to(spool, port)) as (listener, _):
        acks = send(listener.port, "D1", "D2", "D3")
        assert [msa(a)[1] for a in acks] == ["AA"] * 3  # durable in the spool, then AA
        time.sleep(0.4)  # several failed attempts
        assert len(spooled(spool)) == 3
        with Destination("AA", port=port) as dest:
            wait_for(lambda: spooled(spool) == [])
            time.sleep(0.3)  # nothing more comes
    assert [m.split(b"\r")[3].split(b"|")[3][-2:] for m in dest.received] == [b"D1", b"D2", b"D3"]
    assert len(set(dest.control_ids())) == 3


def prediction() -> Prediction:
    return Prediction(
        model="sepsis",
        version="1.2.0",
        bundle_digest="e" * 64,
        outputs={"risk": 0.25},
        vector=FeatureVector(values=(), features=()),
    )


def test_the_spool_survives_a_restart_of_the_sender_and_keeps_order(tmp_path: Path) -> None:
    folder, port = tmp_path / "spool", free_port()
    spool = ResultSpool(folder)
    sent = [
        build_result_message(message(f"S{i}"), [prediction()], control_id=f"OUT{i}")
        for i in range(3)
    ]
    for oru in sent[:2]:
        spool.add(oru)
    temp_name(folder / "000000000009.hl7").write_bytes(b"half a write")  # a crash mid-write
    destination = ResultsDestination(**results_to(folder, port))

    async def run(spool: ResultSpool, until: Callable[[], bool], seconds: float) -> ResultSender:
        sender = ResultSender(destination, spool)
        sender.start()
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await sender.stop(timeout=2)
        return sender

    down = asyncio.run(run(spool, lambda: False, 0.3))  # destination down: nothing leaves
    assert down.counts.retried >= 2 and down.counts.sent == 0
    assert len(spool.pending()) == 2
    reopened = ResultSpool(folder)  # a new process
    assert not list(folder.glob(".*"))
    reopened.add(sent[2])
    assert [p.name for p in spooled(folder)] == [
        "000000000001.hl7",
        "000000000002.hl7",
        "000000000003.hl7",
    ]
    with Destination("AA", port=port) as dest:
        up = asyncio.run(run(reopened, lambda: not spooled(folder), 10))
    assert dest.control_ids() == ["OUT0", "OUT1", "OUT2"]
    assert (up.counts.sent, up.counts.rejected) == (3, 0)


def test_result_message_copies_only_identifiers_and_order_numbers() -> None:
    incoming = (
        b"MSH|^~\\&|LAB|HOSP|EDGE|ICU|20260101120000||ORU^R01|V23|T|2.3||||||8859/1\r"
        b"PID|1|OLD^^^X|MRN-1^^^HOSP^MR~55^^^SSA^SS||Doe^Jane||19500101|F|||1 Main St\r"
        b"ORC|RE|PL-7^LAB|FI-9^LAB\r"
        b"OBR|1|||8310-5^Body temperature^LN\r"
        b"OBX|1|NM|8310-5^Body temperature^LN||38.5|Cel|||||F\r"
    )
    oru = build_result_message(incoming, [prediction(), prediction()], control_id="OUT")
    (msh,) = segments(oru, "MSH")
    assert (msh[9], msh[10], msh[11], msh[12], msh[18]) == ("ORU^R01", "OUT", "T", "2.3", "8859/1")
    assert segments(oru, "PID") == [["PID", "1", "", "MRN-1^^^HOSP^MR~55^^^SSA^SS"]]
    (obr,) = segments(oru, "OBR")
    assert (obr[2], obr[3], obr[4], obr[25]) == ("PL-7^LAB", "FI-9^LAB", "sepsis^sepsis^L", "F")
    assert [n[3] for n in segments(oru, "NTE")] == [
        "source message control id V23",
        f"model sepsis 1.2.0 bundle sha256:{'e' * 64}",
    ]
    assert [(o[1], o[4], o[5]) for o in segments(oru, "OBX")] == [
        ("1", "1", "0.25"),
        ("2", "2", "0.25"),
    ]  # OBX-4: the prediction
    for value in (b"Doe", b"19500101", b"Main", b"OLD", b"38.5"):
        assert value not in oru
    parse_message(oru.decode("latin-1"), find_groups=True)


@pytest.mark.parametrize(
    ("pids", "words"),
    [
        (b"", "exactly one PID segment, the message has 0"),
        (b"PID|1||A^^^H^MR\rPID|2||B^^^H^MR\r", "exactly one PID segment, the message has 2"),
        (b"PID|1||\r", "PID-3"),
    ],
)
def test_a_result_that_could_not_be_filed_safely_is_not_built(pids: bytes, words: str) -> None:
    incoming = b"MSH|^~\\&|LAB|HOSP|EDGE|ICU|2026||ORU^R01|X|P|2.5\r" + pids
    with pytest.raises(Hl7Error, match=words) as caught:
        build_result_message(incoming, [prediction()])
    assert b"A^^^H" not in str(caught.value).encode()


def test_a_batch_of_patients_is_acknowledged_but_sends_no_result(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    body = message("B1").replace(b"PID|", b"PID|2||OTHER^^^HOSP^MR\rPID|", 1)
    with (
        Destination("AA") as dest,
        running_listener(RecordingScorer(), results_to=results_to(spool, dest.port)) as (
            listener,
            _,
        ),
    ):
        sock, pending = connect(listener.port), bytearray()
        sock.sendall(SB + body + EB)
        ack = read_frame(sock, pending)
        sock.close()
        time.sleep(0.2)
    assert msa(ack)[1] == "AA" and dest.received == [] and spooled(spool) == []


def test_an_answer_that_is_not_the_messages_ack_is_retried(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = ResultSpool(folder)
    spool.add(build_result_message(message("W1"), [prediction()], control_id="OUT-W"))
    with Destination("AA", misaddress=1) as dest:
        destination = ResultsDestination(**results_to(folder, dest.port))

        async def run() -> ResultSender:
            sender = ResultSender(destination, spool)
            sender.start()
            deadline = time.monotonic() + 10
            while spool.pending() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await sender.stop(timeout=2)
            return sender

        sender = asyncio.run(run())
    assert (sender.counts.retried, sender.counts.sent) == (1, 1)
    assert [m.split(b"|")[9] for m in dest.received] == [b"OUT-W", b"OUT-W"]


def test_config_of_the_destination() -> None:
    base: dict[str, Any] = {"host": "10.1.2.3", "port": 6661, "spool": "spool"}
    assert ResultsDestination(**base).tls is False  # the hospital LAN without TLS is allowed
    bads: list[dict[str, Any]] = [
        {"tls_ca": "ca.pem"},
        {"tls": True, "tls_cert": "c.pem"},
        {"retry_initial": 5, "retry_max": 1},
        {"colour": "blue"},
    ]
    for bad in bads:
        with pytest.raises(ValidationError):
            ResultsDestination(**base, **bad)
    config = MllpConfig.model_validate(
        {"enabled": True, "model": "m", "results_to": {**base, "tls": True}}
    )
    assert config.results_to is not None and config.results_to.port == 6661


def test_a_frame_arriving_when_stop_begins_is_completed_and_answered() -> None:
    with running_listener(RecordingScorer()) as (listener, loop):
        sock, pending = connect(listener.port), bytearray()
        body = SB + message("HALF") + EB
        sock.sendall(body[:40])
        time.sleep(0.2)
        stopping = asyncio.run_coroutine_threadsafe(listener.stop(), loop)
        time.sleep(0.3)
        sock.sendall(body[40:])
        ack = read_frame(sock, pending)
        stopping.result(10)
        assert sock.recv(10) == b""  # then the connection closes
        sock.close()
    assert msa(ack)[1:3] == ["AA", "HALF"]


def test_a_frame_that_never_completes_is_dropped_after_the_grace() -> None:
    with running_listener(RecordingScorer(), Limits(drain_timeout=0.5)) as (listener, loop):
        sock = connect(listener.port)
        sock.sendall(SB + message("NEVER")[:30])
        time.sleep(0.2)
        started = time.monotonic()
        asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(10)
        took = time.monotonic() - started
        assert sock.recv(10) == b""
        sock.close()
    assert 0.4 < took < 2


def test_results_over_tls_verified_against_the_configured_ca(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, "engine")
    other, _ = self_signed_cert(tmp_path, "other")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    folder = tmp_path / "spool"
    spool = ResultSpool(folder)
    spool.add(build_result_message(message("T1"), [prediction()], control_id="OUT-T"))

    async def run(destination: ResultsDestination, seconds: float) -> ResultSender:
        sender = ResultSender(destination, spool)
        sender.start()
        deadline = time.monotonic() + seconds
        while spool.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await sender.stop(timeout=2)
        return sender

    with Destination("AA", tls=server) as dest:
        untrusted = asyncio.run(
            run(ResultsDestination(**results_to(folder, dest.port, tls=True, tls_ca=other)), 0.3)
        )
        assert (untrusted.counts.sent, dest.received) == (0, [])  # refused to talk
        trusted = asyncio.run(
            run(ResultsDestination(**results_to(folder, dest.port, tls=True, tls_ca=cert)), 10)
        )
    assert untrusted.counts.retried >= 1 and trusted.counts.sent == 1
    assert dest.control_ids() == ["OUT-T"]


def test_a_result_that_cannot_be_spooled_gets_ae_so_the_sender_resends(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with (
        Destination("AA") as dest,
        running_listener(RecordingScorer(), results_to=results_to(spool, dest.port)) as (
            listener,
            _,
        ),
    ):
        (spool / "rejected").rmdir()
        spool.rmdir()
        spool.write_bytes(b"")  # the spool folder is gone: no result can be written
        (ack,) = send(listener.port, "NS1")
    assert msa(ack)[1:4] == ["AE", "NS1", "not scored: result_spool"]
    assert dest.received == []


def test_the_next_frame_arriving_behind_a_busy_one_at_stop_is_answered_too() -> None:
    with running_listener(RecordingScorer()) as (listener, loop):
        sock, pending = connect(listener.port), bytearray()
        following = SB + message("NEXT") + EB
        sock.sendall(SB + message("SLOW", delay=0.4) + EB + following[:30])
        time.sleep(0.1)  # the first is being scored
        stopping = asyncio.run_coroutine_threadsafe(listener.stop(), loop)
        first = read_frame(sock, pending)
        sock.sendall(following[30:])
        second = read_frame(sock, pending)
        stopping.result(10)
        sock.close()
    assert [msa(first)[1:3], msa(second)[1:3]] == [["AA", "SLOW"], ["AA", "NEXT"]]


def test_a_full_spool_answers_ae_until_results_leave(tmp_path: Path) -> None:
    spool, port = tmp_path / "spool", free_port()
    with running_listener(
        RecordingScorer(), results_to=results_to(spool, port, spool_max_messages=2)
    ) as (listener, _):
        acks = send(listener.port, "F1", "F2", "F3")
        assert [msa(a)[1] for a in acks] == ["AA", "AA", "AE"]
        assert msa(acks[2])[3] == "not scored: result_spool"
        with Destination("AA", port=port) as dest:
            wait_for(lambda: len(dest.received) == 2)
            wait_for(lambda: spooled(spool) == [])
            (again,) = send(listener.port, "F3")
            wait_for(lambda: len(dest.received) == 3)
    assert msa(again)[1] == "AA"


def test_destination_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = MllpConfig.model_validate(
        {
            "enabled": True,
            "model": "m",
            "results_to": {
                "host": "127.0.0.1",
                "port": 6661,
                "spool": "spool",
                "tls": True,
                "tls_ca": "certs/engine.pem",
            },
        },
        context={"base_dir": tmp_path},
    )
    assert config.results_to is not None
    assert (config.results_to.spool, config.results_to.tls_ca) == (
        tmp_path / "spool",
        tmp_path / "certs" / "engine.pem",
    )


@pytest.mark.parametrize("mode", ["close", "drop"])
def test_a_destination_closing_after_each_ack_costs_no_retry(tmp_path: Path, mode: str) -> None:
    folder = tmp_path / "spool"
    spool = ResultSpool(folder)
    for i in range(3):
        spool.add(build_result_message(message(f"K{i}"), [prediction()], control_id=f"OUT{i}"))
    with Destination("AA", one_per_connection=mode) as dest:
        destination = ResultsDestination(
            **results_to(folder, dest.port, retry_initial=5, retry_max=5)
        )

        async def run() -> ResultSender:
            sender = ResultSender(destination, spool)
            sender.start()
            deadline = time.monotonic() + 4
            while spool.pending() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await sender.stop(timeout=2)
            return sender

        sender = asyncio.run(run())
    assert (sender.counts.sent, sender.counts.retried) == (3, 0)
    assert dest.control_ids() == ["OUT0", "OUT1", "OUT2"]


def test_the_agent_config_file_carries_the_destination(tmp_path: Path) -> None:
    section = """
trust:
  keys: []
models:
  - name: sepsis
    mapping: mapping.yaml
mllp:
  enabled: true
  model: sepsis
  results_to:
    host: 10.20.1.5
    port: 6661
    spool: var/results-spool
"""
    good = tmp_path / "agent.yaml"
    good.write_text("store:\n  root: store\n" + section)
    destination = load_config(good).mllp.results_to
    assert destination is not None
    assert (destination.spool, destination.tls) == (tmp_path / "var" / "results-spool", False)
    bad = tmp_path / "typo.yaml"
    bad.write_text("store:\n  root: store\n" + section.replace("    port:", "    prot:"))
    with pytest.raises(ConfigError, match=r"typo.yaml:\d+: mllp.results_to.prot"):
        load_config(bad)


def test_the_site_may_address_the_result_message(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    addressing = {
        "sending_application": "EDGE-AI^1.2.3.4^ISO",
        "receiving_application": "EPIC",
        "receiving_facility": "MAIN",
    }
    with (
        Destination("AA") as dest,
        running_listener(
            RecordingScorer(), results_to=results_to(spool, dest.port, **addressing)
        ) as (listener, _),
    ):
        send(listener.port, "AD1")
        wait_for(lambda: len(dest.received) == 1)
    (msh,) = segments(dest.received[0], "MSH")
    assert msh[3:7] == ["EDGE-AI^1.2.3.4^ISO", "ICU", "EPIC", "MAIN"]  # MSH-4 as derived
    with pytest.raises(ValidationError, match="sending_facility may not hold HL7 delimiters"):
        ResultsDestination(**results_to(spool, 1, sending_facility="A|B"))
