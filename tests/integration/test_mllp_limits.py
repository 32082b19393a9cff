"""The MLLP listener's admission limits on the real `edge-agent serve` process, with the
shipped defaults except a short idle timeout: one client cannot hold every slot, a client
dripping a frame a byte at a time is closed at the idle deadline, refusals are logged at a
bounded rate; and `edge-agent config check` refuses clear-text MLLP beyond loopback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.agent_process import start_agent
from tests.integration.reliability_support import recent_oru, reliability_root

pytestmark = pytest.mark.integration

SB, EB = b"\x0b", b"\x1c\x0d"
TIMEOUT = 10.0  # seconds any single socket wait may take


def _connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), TIMEOUT, source_address=(source, 0))


def _acked(sock: socket.socket) -> bool:
    """Send the demo ORU^R01; True when an ACK comes back, False when the listener closed
    the connection unanswered."""
    sock.sendall(SB + recent_oru() + EB)
    answer = b""
    try:
        while EB not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            answer += chunk
    except ConnectionResetError:
        return False
    return b"MSA|" in answer


def test_one_client_cannot_hold_every_slot_nor_drip_one_forever(tmp_path: Path) -> None:
    def edit(config: dict[str, object]) -> None:
        config["mllp"]["idle_timeout"] = 1.0  # type: ignore[index]

    config = reliability_root(tmp_path, edit=edit)
    port = yaml.safe_load(config.read_text())["mllp"]["port"]
    agent = start_agent(config)
    try:
        with contextlib.ExitStack() as held:
            answered = [_acked(held.enter_context(_connect(port, "127.0.0.1"))) for _ in range(40)]
            assert answered.count(True) == 8  # max_connections_per_client, of 32 slots
            assert _acked(held.enter_context(_connect(port, "127.0.0.2")))  # another client

            drip = held.enter_context(_connect(port, "127.0.0.3"))
            drip.settimeout(0.1)
            started, closed = time.monotonic(), False
            drip.sendall(SB)
            while not closed and time.monotonic() - started < 5.0:
                try:
                    drip.sendall(b"x")
                    closed = drip.recv(10) == b""
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
            assert closed and time.monotonic() - started < 2.5
        log = agent.log_text()
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert log.count("mllp connection refused: too many from one client") == 1  # not 32


def test_config_check_refuses_clear_text_mllp_beyond_loopback(tmp_path: Path) -> None:
    def edit(config: dict[str, object]) -> None:
        config["mllp"].update(host="0.0.0.0", allowed_clients=["0.0.0.0/0"])  # type: ignore[attr-defined]

    config = reliability_root(tmp_path, edit=edit)
    check = subprocess.run(
        [sys.executable, "-m", "agent.cli", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 2, check.stdout + check.stderr
    assert "requires TLS" in check.stdout + check.stderr
