"""Run the real agent process (``edge-agent serve``) on loopback for integration tests.

The demo config is used as shipped: its folder is copied beside a link to fixtures/ in a
temporary directory, so its relative paths (store, drop folder, registry) land there, and
only the HTTP port is changed to a free one.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    config_path: Path
    root: Path
    log_path: Path
    log_file: BinaryIO
    verify: ssl.SSLContext | bool = True  # trusts the CA of an agent serving HTTPS

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10.0, verify=self.verify)

    def exchange(self, pieces: list[bytes]) -> bytes:
        """Sends ``pieces`` one write each on a fresh connection; all the agent answers until
        it closes the connection."""
        host, port = self.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            try:
                for piece in pieces:
                    sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused part-way: what it answered is still to be read
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        return answer

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        try:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    return self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    return self.process.wait()
            return self.process.returncode
        finally:
            self.log_file.close()


def demo_root(tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A copy of config/ beside a link to fixtures/, with free HTTP and MLLP ports; returns the
    config file's path. ``edit`` may change the parsed config before it is written."""
    root = tmp_path / "demo"
    (root / "config").mkdir(parents=True)
    os.symlink(REPO / "fixtures", root / "fixtures")
    for item in (REPO / "config").rglob("*"):
        if item.is_file():
            target = root / "config" / item.relative_to(REPO / "config")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.read_bytes())
    config_path = root / "config" / "demo.yaml"
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("http", {})["port"] = free_port()
    if "mllp" in config:
        config["mllp"]["port"] = free_port()
    if edit is not None:
        edit(config)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def flag_out_of_range(config_path: Path, feature: str) -> None:
    """Make the copied demo mapping score ``feature`` outside its plausible range, flagged,
    instead of refusing the patient: how a site watching a units mix-up as drift (rather
    than refusing it patient by patient) configures it."""
    mapping = config_path.parent / "mappings" / "demo-site.yaml"
    document = yaml.safe_load(mapping.read_text())
    document["features"][feature]["out_of_range"] = "flag"
    mapping.write_text(yaml.safe_dump(document, sort_keys=False))


def start_agent(
    config_path: Path,
    ready_timeout: float = 60.0,
    up_path: str = "/readyz",
    ca: Path | None = None,
) -> AgentProcess:
    """Start the agent and wait until ``up_path`` answers 200 (``/healthz`` for an agent
    expected to come up with a model unavailable); ``ca`` verifies an agent serving HTTPS."""
    config = yaml.safe_load(config_path.read_text())
    http = config.get("http", {})
    scheme = "https" if ca is not None else "http"
    base_url = f"{scheme}://{http.get('host', '127.0.0.1')}:{http['port']}"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    log_path = config_path.parent / "agent.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--config", str(config_path)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=config_path.parent,
    )
    agent = AgentProcess(
        process, base_url, config_path, config_path.parent.parent, log_path, log_file, verify
    )
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            agent.stop()
            raise RuntimeError(f"agent exited with {process.returncode}:\n{agent.log_text()}")
        try:
            if httpx.get(f"{base_url}{up_path}", timeout=1.0, verify=verify).status_code == 200:
                return agent
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    agent.stop(signal.SIGKILL)
    raise RuntimeError(f"agent not ready within {ready_timeout}s:\n{agent.log_text()}")
