"""What the MLLP listener refuses before the data plane sees it (a client not allowed, a
connection over the cap, a frame that is not HL7 or is too large): answered or closed as
before, and now counted and written to the audit log like the HTTP edge's refusals,
coalesced per peer and kind."""

from __future__ import annotations

import socket

from agent.limits import Limits
from agent.types import IntakePath
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
)


def _closed_at_once(port: int) -> bool:
    with connect(port) as sock:
        try:
            return sock.recv(10) == b""
        except ConnectionResetError:
            return True


def test_a_client_not_allowed_is_counted_and_audited_once_per_window() -> None:
    scorer = RecordingScorer()
    limits = Limits(drain_timeout=5, audit_refusal_window=60)  # one window, however slow
    with running_listener(scorer, limits, allowed_clients=["127.0.0.2/32"]) as (listener, _):
        assert all(_closed_at_once(listener.port) for _ in range(5))
    # the listener's stop wrote the window still open: the first refusal, then the 4 after it
    assert [(a.reason, a.route, a.intake, a.count) for a in scorer.audited] == [
        ("unauthorized", "connection", IntakePath.mllp, 1),
        ("unauthorized", "connection", IntakePath.mllp, 4),
    ]
    first = scorer.audited[0]
    assert (first.peer, first.model, first.token) == ("127.0.0.1", "sepsis", None)
    assert scorer.refusals == [("sepsis", "unauthorized")] * 5


def test_a_connection_over_the_cap_is_throttled() -> None:
    scorer = RecordingScorer()
    with running_listener(scorer, max_connections=1) as (listener, _):
        held = connect(listener.port)
        held.sendall(SB + message("HELD") + EB)
        assert msa(read_frame(held, bytearray()))[1] == "AA"
        assert _closed_at_once(listener.port)
        held.close()
    assert [(a.reason, a.route) for a in scorer.audited] == [("throttled", "connection")]
    assert scorer.refusals == [("sepsis", "throttled")]


def test_frames_not_hl7_or_too_large_are_answered_counted_and_audited() -> None:
    scorer = RecordingScorer()
    limits = Limits(hl7_message_max=len(message("FIT")), drain_timeout=5)
    with running_listener(scorer, limits=limits) as (listener, _):
        sock, pending = connect(listener.port), bytearray()
        sock.sendall(SB + b"GET / HTTP/1.1\r\n\r\n" + EB)
        sock.sendall(SB + message("FIT") + b"NTE|1|secret words\r" + EB)
        not_hl7, too_large = read_frame(sock, pending), read_frame(sock, pending)
        sock.close()
    assert [msa(not_hl7)[1], msa(too_large)[1]] == ["AR", "AR"]
    assert segments(too_large, "ERR")  # the reason is told, as before
    assert [(a.reason, a.route) for a in scorer.audited] == [
        ("bad_input", "frame"),
        ("request_too_large", "frame"),
    ]
    assert scorer.refusals == [("sepsis", "bad_input"), ("sepsis", "request_too_large")]
    assert all("secret" not in repr(a) for a in scorer.audited)


def test_a_stop_is_no_refusal() -> None:
    scorer = RecordingScorer()
    with running_listener(scorer) as (listener, _):
        port = listener.port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(SB + message("OK") + EB)
            assert msa(read_frame(sock, bytearray()))[1] == "AA"
    assert scorer.audited == [] and scorer.refusals == []
