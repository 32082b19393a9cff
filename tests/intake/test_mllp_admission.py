"""Who gets a connection slot on the MLLP listener and for how long, on real sockets: the
per-client cap, the idle deadline that a byte-at-a-time client cannot stretch, refusals and
failed accepts logged at a bounded rate, and the config that refuses clear-text HL7 off
loopback."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.intake.mllp.config import MllpConfig
from agent.limits import Limits
from tests.intake.mllp_support import (
    EB,
    SB,
    RecordingScorer,
    message,
    msa,
    read_frame,
    running_listener,
    self_signed_cert,
)

DEADLINE = 10.0  # seconds any single wait may take before the test fails


def connect_from(source: str, port: int) -> socket.socket:
    """A connection to the listener from the loopback address ``source`` (127.0.0.0/8 is
    all loopback, so each address is another client as the listener sees it)."""
    return socket.create_connection(
        ("127.0.0.1", port), timeout=DEADLINE, source_address=(source, 0)
    )


def closed_unanswered(sock: socket.socket) -> bool:
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:  # closed with bytes unread: a reset
        return True


def wait_for(condition: Callable[[], object], timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_one_client_cannot_hold_every_slot(caplog: pytest.LogCaptureFixture) -> None:
    """With the shipped defaults (32 slots, 8 per client), 40 connections from one address:
    8 are served, the others closed unread, with one log line for all of them; a second
    client still gets its ACK."""
    caplog.set_level(logging.WARNING, logger="agent.intake.mllp.listener")
    with running_listener(RecordingScorer()) as (listener, _), contextlib.ExitStack() as held:
        admitted, refused = [], []
        for i in range(40):
            sock = held.enter_context(connect_from("127.0.0.1", listener.port))
            sock.sendall(SB + message(f"H{i}") + EB)
            try:
                answer = read_frame(sock, bytearray())
            except (ConnectionError, TimeoutError):
                refused.append(sock)
            else:
                assert msa(answer)[1] == "AA"
                admitted.append(sock)
        assert (len(admitted), len(refused)) == (8, 32)
        other = held.enter_context(connect_from("127.0.0.2", listener.port))
        other.sendall(SB + message("OTHER") + EB)
        assert msa(read_frame(other, bytearray()))[1:3] == ["AA", "OTHER"]
    lines = [r for r in caplog.records if "too many from one client" in r.getMessage()]
    assert len(lines) == 1 and lines[0].__dict__["count"] == 1  # the first; the rest held


def test_idle_deadline_is_not_restarted_by_a_dripping_client() -> None:
    """A client sending one byte of an endless frame every 0.1 s is closed at the idle
    deadline (1 s) like a silent one; before, each byte restarted it."""
    with (
        running_listener(RecordingScorer(), idle_timeout=1.0) as (listener, _),
        connect_from("127.0.0.1", listener.port) as sock,
    ):
        sock.sendall(SB + message("FIRST") + EB)
        assert msa(read_frame(sock, bytearray()))[1] == "AA"
        started = time.monotonic()
        sock.settimeout(0.1)
        closed = False
        sock.sendall(SB)
        while not closed and time.monotonic() - started < 5.0:
            try:
                sock.sendall(b"x")
                closed = sock.recv(10) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        elapsed = time.monotonic() - started
    assert closed, "still open after 5 s of dripping"
    assert 0.9 <= elapsed < 2.0, elapsed


class _Descriptors:
    """Runs the process out of file descriptors (a low soft limit, then every free one
    taken) and gives them back."""

    def __init__(self) -> None:
        self._limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self._taken: list[int] = []

    def exhaust(self) -> None:
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, self._limits[1]))
        with contextlib.suppress(OSError):
            while True:
                self._taken.append(os.open(os.devnull, os.O_RDONLY))

    def release(self) -> None:
        while self._taken:
            os.close(self._taken.pop())
        resource.setrlimit(resource.RLIMIT_NOFILE, self._limits)


@pytest.fixture
def descriptors() -> Iterator[_Descriptors]:
    held = _Descriptors()
    try:
        yield held
    finally:
        held.release()


def test_failed_accepts_are_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture, descriptors: _Descriptors
) -> None:
    """Out of file descriptors, asyncio retries the accept every second and reports each
    failure; the listener's loop logs one line per ``log_repeat_interval`` (10 s) instead,
    and the waiting client is served once descriptors are free again."""
    caplog.set_level(logging.WARNING)
    limits = Limits(drain_timeout=5)
    with (
        running_listener(RecordingScorer(), limits) as (listener, _),
        socket.socket() as waiting,  # its descriptor taken before they run out
    ):
        waiting.settimeout(DEADLINE)
        descriptors.exhaust()
        waiting.connect(("127.0.0.1", listener.port))  # queued; the accept fails
        wait_for(lambda: _accept_lines(caplog))
        time.sleep(2.5)  # the window: asyncio reports a failure every second
        assert len(_accept_lines(caplog)) == 1
        descriptors.release()
        waiting.sendall(SB + message("LATE") + EB)
        assert msa(read_frame(waiting, bytearray()))[1:3] == ["AA", "LATE"]
    assert not [r for r in caplog.records if "socket.accept()" in r.getMessage()]


def _accept_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "accept failed: out of system resources"]


def test_config_refuses_clear_text_hl7_beyond_loopback(tmp_path: Path) -> None:
    for clients in (["0.0.0.0/0"], ["::/0"], ["10.1.0.0/16"], ["127.0.0.1", "10.1.2.3"]):
        with pytest.raises(ValidationError, match="requires TLS"):
            MllpConfig(enabled=True, model="m", host="0.0.0.0", allowed_clients=clients)
    cert, key = self_signed_cert(tmp_path)
    assert MllpConfig(
        enabled=True,
        model="m",
        host="0.0.0.0",
        allowed_clients=["10.1.0.0/16"],
        tls_cert=cert,
        tls_key=key,
    )
    assert MllpConfig(enabled=True, model="m", allowed_clients=["127.0.0.0/8", "::1"])
