"""The MLLP listener on a real socket: third-party and own clients, ordering, concurrency,
every frame answered (garbage, oversize, unscorable), enhanced mode, TLS, drain on stop."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import hl7.client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.intake.mllp.config import MllpConfig
from agent.limits import Limits
from agent.types import IntakePath, RecordFormat
from tests.intake.mllp_support import (
    EB,
    SB,
    RecordingScorer,
    connect,
    message,
    msa,
    read_frame,
    running_listener,
    segments,
    self_signed_cert,
)


def frame(body: bytes) -> bytes:
    return SB + body + EB


def test_python_hl7_mllp_send_gets_an_ack_per_message(tmp_path: Path) -> None:
    scorer = RecordingScorer()
    batch = tmp_path / "messages.hl7"
    batch.write_bytes(b"".join(frame(message(f"C{i}")) for i in range(3)))
    with running_listener(scorer) as (listener, _):
        mllp_send = Path(sys.executable).parent / "mllp_send"
        result = subprocess.run(
            [str(mllp_send), "--file", str(batch), "--port", str(listener.port), "127.0.0.1"],
            capture_output=True,
            timeout=60,
            check=True,
        )
    acks = [line for line in result.stdout.split(b"\n") if line.strip()]
    assert len(acks) == 3
    for i, ack in enumerate(acks):
        body = ack.strip(SB + EB)
        assert msa(body)[1:3] == ["AA", f"C{i}"]
    assert scorer.scored == ["C0", "C1", "C2"]
    request = scorer.requests[0]
    assert (request.model, request.format, request.intake) == (
        "sepsis",
        RecordFormat.hl7v2,
        IntakePath.mllp,
    )
    assert request.body == message("C0").rstrip(b"\r")  # mllp_send strips the last CR
    assert request.caller == "mllp:127.0.0.1"


def test_python_hl7_client_garbage_then_valid_on_one_connection() -> None:
    with (
        running_listener(RecordingScorer()) as (listener, _),
        hl7.client.MLLPClient("127.0.0.1", listener.port) as client,
    ):
        rejected = client.send_message(b"this is not HL7 at all")
        accepted = client.send_message(message("OK1"))
    ack = rejected.strip(SB + EB)
    assert msa(ack)[1:4] == ["AR", "", "rejected: bad_input"]
    (err,) = segments(ack, "ERR")
    assert err[3].startswith("100^")
    assert msa(accepted.strip(SB + EB))[1:3] == ["AA", "OK1"]


def test_ack_addresses_and_results() -> None:
    with running_listener(RecordingScorer()) as (listener, _):
        sock, pending = connect(listener.port), bytearray()
        sock.sendall(frame(message("R1")))
        ack = read_frame(sock, pending)
        sock.close()
    (msh,) = segments(ack, "MSH")
    assert msh[3:7] == ["EDGE", "ICU", "LAB", "HOSP"]  # receiver and sender swapped
    assert msh[9] == "ACK^R01^ACK" and msh[11] == "P" and msh[12] == "2.5"
    assert msh[10] and msh[10] != "R1"
    assert msa(ack)[1:3] == ["AA", "R1"]
    obx = segments(ack, "OBX")
    assert [(o[3], o[4], o[5]) for o in obx] == [
        ("risk^risk^L", "1", "0.125"),
        ("risk\\F\\untreated^risk\\F\\untreated^L", "1", "0.5"),  # "|" escaped
    ]
    assert obx[0][17] == "sepsis^sepsis 1.2.0^L"
    assert b"MRN-4711" not in ack and b"Doe" not in ack


def test_plain_ack_mode_carries_no_results() -> None:
    with running_listener(RecordingScorer(), ack_mode="plain") as (listener, _):
        sock, pending = connect(listener.port), bytearray()
        sock.sendall(frame(message("P1")))
        ack = read_frame(sock, pending)
        sock.close()
    assert msa(ack)[1] == "AA" and segments(ack, "OBX") == []


@pytest.mark.parametrize(
    ("body", "code", "text", "reason"),
    [
        (message("E1", obx=False), "AE", "not scored: unmappable", "unmappable"),
        (
            message("E2", kind="ORM^O01^ORM_O01"),
            "AR",
            "rejected: unsupported_media_type",
            "unsupported_media_type",
        ),
        (
            b"MSH|^~\\&|X|Y|EDGE|ICU|2026||ORU^R01|E3|P|2.5\rPID|1\rOBX|1|NM|x||notanumber",
            "AR",
            "rejected: internal",
            "internal",
        ),  # the scorer fails unexpectedly
    ],
)
def test_scoring_failures_are_answered_and_the_connection_stays(
    body: bytes, code: str, text: str, reason: str
) -> None:
    with running_listener(RecordingScorer()) as (listener, _):
        sock, pending = connect(listener.port), bytearray()
        sock.sendall(frame(body))
        ack = read_frame(sock, pending)
        sock.sendall(frame(message("after")))
        after = read_frame(sock, pending)
        sock.close()
    control_id = body.split(b"|")[9].decode()
    assert msa(ack)[1:4] == [code, control_id, text]
    (err,) = segments(ack, "ERR")
    assert (err[4], err[5]) == ("E", reason)
    assert msa(after)[1:3] == ["AA", "after"]


def test_oversize_frame_gets_ar_and_the_next_message_is_served() -> None:
    big = message("BIG") + b"NTE|1||" + b"x" * 5000 + b"\r"
    with running_listener(RecordingScorer(), max_message_bytes=2000) as (listener, _):
        sock, pending = connect(listener.port), bytearray()
        # Sent in pieces, the end block split between two of them.
        data = frame(big) + frame(message("SMALL"))
        cut = len(frame(big)) - 1
        for piece in (data[:1000], data[1000:cut], data[cut:]):
            sock.sendall(piece)
            time.sleep(0.01)
        too_big, small = read_frame(sock, pending), read_frame(sock, pending)
        sock.close()
    assert msa(too_big)[1:4] == ["AR", "BIG", "rejected: request_too_large"]
    assert msa(small)[1:3] == ["AA", "SMALL"]


def test_frame_content_limit_counts_the_message_not_the_chunk() -> None:
    limits = Limits(hl7_message_max=len(message("FIT")), drain_timeout=5)
    with running_listener(RecordingScorer(), limits=limits) as (listener, _):
        sock, pending = connect(listener.port), bytearray()
        sock.sendall(frame(message("FIT")) + frame(message("FIT") + b"NTE|1\r"))
        fit, over = read_frame(sock, pending), read_frame(sock, pending)
        sock.close()
    assert msa(fit)[1] == "AA" and msa(over)[1] == "AR"


def test_pipelined_messages_are_answered_in_order() -> None:
    scorer = RecordingScorer()
    ids = [f"Q{i:02d}" for i in range(20)]
    with running_listener(scorer) as (listener, _):
        sock, pending = connect(listener.port), bytearray()
        # Later messages are faster to score: order must still hold.
        sock.sendall(
            b"\r\n".join(frame(message(c, delay=0.02 if i < 3 else 0.0)) for i, c in enumerate(ids))
        )
        answered = [msa(read_frame(sock, pending))[2] for _ in ids]
        sock.close()
    assert answered == ids
    assert scorer.scored == ids


def test_connections_are_served_concurrently_off_the_event_loop() -> None:
    scorer = RecordingScorer()
    with running_listener(scorer) as (listener, _):
        results: dict[int, list[str]] = {}

        def client(n: int) -> None:
            sock, pending = connect(listener.port), bytearray()
            got = []
            for i in range(3):
                sock.sendall(frame(message(f"K{n}-{i}", delay=0.2)))
                got.append(msa(read_frame(sock, pending))[2])
            sock.close()
            results[n] = got

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.perf_counter() - started
    assert results == {n: [f"K{n}-{i}" for i in range(3)] for n in range(4)}
    assert elapsed < 2.0, f"4 x 3 x 0.2 s took {elapsed:.2f} s: connections were serialised"
    assert "mllp-loop" not in scorer.threads  # scoring never blocked the event loop


def test_own_asyncio_client_with_enhanced_mode() -> None:
    async def exchange(port: int) -> list[list[bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for body, count in (
            (message("EN1", accept_ack="AL", application_ack="AL"), 2),
            (message("EN2", accept_ack="AL", application_ack="NE"), 1),
            (message("EN3", accept_ack="NE", application_ack="ER", obx=False), 1),
            (message("EN4", accept_ack="ER", application_ack="ER"), 0),
            (message("EN5", kind="ORM^O01", accept_ack="ER", application_ack="NE"), 1),
            (message("EN6"), 1),
        ):
            writer.write(frame(body))
            await writer.drain()
            answers.append([(await reader.readuntil(EB))[1:-2] for _ in range(count)])
        writer.close()
        await writer.wait_closed()
        return answers

    with running_listener(RecordingScorer()) as (listener, _):
        answers = asyncio.run(exchange(listener.port))
    codes = [[msa(a)[1] for a in group] for group in answers]
    assert codes == [["CA", "AA"], ["CA"], ["AE"], [], ["CR"], ["AA"]]
    assert msa(answers[0][0])[2] == "EN1" and segments(answers[0][0], "OBX") == []
    assert segments(answers[0][1], "OBX") != []


def test_stop_drains_the_message_in_flight_and_closes_idle_connections() -> None:
    scorer = RecordingScorer()
    with running_listener(scorer) as (listener, loop):
        idle = connect(listener.port)
        busy, pending = connect(listener.port), bytearray()
        port = listener.port
        busy.sendall(frame(message("SLOW", delay=0.5)))
        time.sleep(0.2)  # the scorer is working on it
        stopping = asyncio.run_coroutine_threadsafe(listener.stop(), loop)
        ack = read_frame(busy, pending)
        stopping.result(10)
        assert idle.recv(10) == b""  # closed without a frame owed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        busy.close()
        idle.close()
    assert msa(ack)[1:3] == ["AA", "SLOW"]


def test_clients_outside_the_allow_list_are_closed_unanswered() -> None:
    # 127.0.0.2 alone: a loopback allow-list needs no TLS, and 127.0.0.1 is outside it
    with running_listener(RecordingScorer(), allowed_clients=["127.0.0.2"]) as (listener, _):
        with connect(listener.port) as sock:
            sock.sendall(frame(message("NO")))
            try:
                answer = sock.recv(10)
            except ConnectionResetError:  # closed with our bytes unread: a reset
                answer = b""
        assert answer == b""


def test_mllp_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    with running_listener(RecordingScorer(), tls_cert=cert, tls_key=key) as (listener, _):
        context = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection(("127.0.0.1", listener.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            pending = bytearray()
            sock.sendall(frame(message("TLS1")))
            ack = read_frame(sock, pending)  # type: ignore[arg-type]
    assert msa(ack)[1:3] == ["AA", "TLS1"]


def test_config_refuses_unsafe_or_incomplete_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs the model"):
        MllpConfig(enabled=True)
    with pytest.raises(ValidationError, match="not loopback"):
        MllpConfig(enabled=True, model="m", host="0.0.0.0")
    with pytest.raises(ValidationError, match="go together"):
        MllpConfig(tls_cert=tmp_path / "c.pem")
    with pytest.raises(ValidationError):
        MllpConfig(allowed_clients=["not-a-network"])
    cert, key = self_signed_cert(tmp_path)
    assert MllpConfig(
        enabled=True,
        model="m",
        host="0.0.0.0",
        allowed_clients=["10.1.0.0/16"],
        tls_cert=cert,
        tls_key=key,
    )


def test_any_chunking_of_a_stream_gets_every_frame_answered_in_order() -> None:
    """Frames cut at arbitrary points (the end block split too), with garbage and oversize
    frames mixed in: one ACK per frame, in order, on one connection."""
    kinds = st.lists(st.sampled_from(["ok", "garbage", "big", "noise"]), min_size=1, max_size=6)

    with running_listener(RecordingScorer(), max_message_bytes=1500) as (listener, _):

        @settings(max_examples=25, deadline=None)
        @given(kinds, st.data())
        def exchange(plan: list[str], data: st.DataObject) -> None:
            stream, expected = b"", []
            for i, kind in enumerate(plan):
                if kind == "ok":
                    stream += frame(message(f"H{i}"))
                    expected.append(("AA", f"H{i}"))
                elif kind == "garbage":
                    stream += frame(b"\x00garbage|" + bytes([i]))
                    expected.append(("AR", ""))
                elif kind == "big":
                    stream += frame(message(f"B{i}") + b"NTE|" + b"y" * 3000 + b"\r")
                    expected.append(("AR", f"B{i}"))
                else:
                    stream += b"\r\n"  # between frames: ignored
            cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=8)))
            with connect(listener.port) as sock:
                pending = bytearray()
                for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
                    sock.sendall(stream[start:end])
                got = [tuple(msa(read_frame(sock, pending))[1:3]) for _ in expected]
            assert got == expected

        exchange()


def test_connection_cap_and_idle_timeout() -> None:
    with running_listener(RecordingScorer(), max_connections=1, idle_timeout=0.3) as (
        listener,
        _,
    ):
        first, pending = connect(listener.port), bytearray()
        first.sendall(frame(message("FIRST")))
        assert msa(read_frame(first, pending))[1] == "AA"
        with connect(listener.port) as second:
            assert second.recv(10) == b""  # over the cap: closed before anything is read
        silent = time.monotonic()
        assert first.recv(10) == b""  # closed once silent for longer than idle_timeout
        assert time.monotonic() - silent >= 0.25  # not before (the clock's grain aside)
        first.close()
        assert msa(_admitted_within(listener.port, message("THIRD"), 5.0))[1:3] == [
            "AA",
            "THIRD",
        ]  # the slot is free again


def _admitted_within(port: int, body: bytes, seconds: float) -> bytes:
    """The ACK of ``body`` on the first connection admitted within ``seconds``: the slot a
    closed connection held is freed just after the peer sees it closed."""
    deadline = time.monotonic() + seconds
    while True:
        with connect(port) as sock:
            try:
                sock.sendall(frame(body))
                return read_frame(sock, bytearray())
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.02)
