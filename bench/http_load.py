"""The HTTP client of the benchmarks: stdlib ``http.client`` on keep-alive connections.

Chosen over wrk so the suite needs nothing outside the virtualenv (CI included), and over
httpx because it costs the client less CPU per request. Both loops are bounded by a request
count and a deadline, and target loopback only.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    """One POST to measure: the URL (loopback), body and headers."""

    url: str
    body: bytes
    headers: Mapping[str, str]

    def connect(self) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(self.url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("benchmarks send traffic to loopback only")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30), path


def post(connection: http.client.HTTPConnection, path: str, target: Target) -> int:
    """One request on ``connection``; the status (the body is read so the connection stays)."""
    connection.request("POST", path, body=target.body, headers=dict(target.headers))
    response = connection.getresponse()
    response.read()
    return response.status


def sequential(target: Target, count: int, deadline_s: float) -> list[float]:
    """Seconds per request of up to ``count`` requests one after another (one connection).
    Raises RuntimeError on any answer but 200."""
    connection, path = target.connect()
    latencies: list[float] = []
    stop = time.perf_counter() + deadline_s
    try:
        while len(latencies) < count and time.perf_counter() < stop:
            started = time.perf_counter()
            status = post(connection, path, target)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"{target.url} answered {status}")
    finally:
        connection.close()
    return latencies


@dataclass(frozen=True)
class Throughput:
    clients: int
    requests: int
    failures: int
    seconds: float
    latencies: list[float]  # seconds, each successful request's, queueing at the server included

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def concurrent(target: Target, clients: int, per_client: int, deadline_s: float) -> Throughput:
    """``clients`` threads, each sending up to ``per_client`` requests back to back on its own
    connection; requests/s over the wall time of the whole run."""
    counts = [0] * clients
    failures = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + deadline_s
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        connection, path = target.connect()
        try:
            barrier.wait()
            while counts[index] + failures[index] < per_client and time.perf_counter() < stop:
                sent = time.perf_counter()
                if post(connection, path, target) == 200:
                    latencies[index].append(time.perf_counter() - sent)
                    counts[index] += 1
                else:
                    failures[index] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return Throughput(
        clients,
        sum(counts),
        sum(failures),
        elapsed,
        [seconds for own in latencies for seconds in own],
    )
