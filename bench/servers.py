"""Start the servers under test as real processes, each pinned to its own core.

The machine has two cores: every server runs on ``SERVER_CPU`` and the benchmark's client
on ``CLIENT_CPU``, so neither starves the other and every server gets the same single core
(uvicorn runs one worker; the agent and the peers are one process each). Cold start is
measured here: from just before the process is spawned to the first 200 from ``probe``.
The process's own CPU time (``cpu_seconds``) is what a shared machine cannot inflate much:
a neighbour's load delays a request but does not add to the server's CPU time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SERVER_CPU = 0
CLIENT_CPU = 1


def _pin(cpu: int) -> None:
    """Pin the calling thread (and threads and children it starts later) to ``cpu``, when
    there is more than one core to choose from."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) > 1 and cpu in allowed:
        os.sched_setaffinity(0, {cpu})


def pin_client() -> None:
    _pin(CLIENT_CPU)


def _pin_server() -> None:  # runs in the child between fork and exec
    _pin(SERVER_CPU)


@dataclass
class Server:
    """A running server process; ``cold_start`` is spawn to first good answer, in seconds,
    and ``cold_start_cpu`` the CPU seconds the process had used by then."""

    name: str
    process: subprocess.Popen[bytes]
    cold_start: float
    log: IO[bytes]
    log_path: Path
    cold_start_cpu: float = 0.0

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS of /proc/PID/status)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"{self.name}: no VmRSS for pid {self.process.pid}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def stop(self, timeout: float = 20.0) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            self.log.close()


def start_server(
    name: str,
    argv: Sequence[str],
    cwd: Path,
    probe: Callable[[], bool],
    log_path: Path,
    timeout: float = 90.0,
) -> Server:
    """Spawn ``argv`` pinned to the server core and wait until ``probe()`` is true."""
    log = log_path.open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_pin_server
    )
    server = Server(name, process, 0.0, log, log_path)
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            log.close()
            raise RuntimeError(
                f"{name} exited with {process.returncode}: "
                f"{log_path.read_text(errors='replace')[-2000:]}"
            )
        if probe():
            server.cold_start = time.perf_counter() - started
            server.cold_start_cpu = server.cpu_seconds()
            return server
        time.sleep(0.01)
    server.stop()
    raise RuntimeError(
        f"{name} gave no good answer within {timeout} s: "
        f"{log_path.read_text(errors='replace')[-2000:]}"
    )


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]
