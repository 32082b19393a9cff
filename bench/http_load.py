"""The HTTP client of the benchmarks: one fixed request on keep-alive loopback sockets.

Stdlib only, so the suite needs nothing outside the virtualenv (CI included), and as lean
as wrk's loop: the request's bytes are built once, and of each answer only the status line
and ``Content-Length`` are read before the body. ``http.client`` spent about 0.15 ms of the
client's CPU per request (its header parsing), and with several client threads in one
process that work queues on the GIL and lands in every measured latency, whichever server
is measured. Both loops are bounded by a request count and a deadline, and target loopback
only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

_HEAD_END = b"\r\n\r\n"
_HEAD_MAX = 65_536  # bytes of an answer's head: anything longer is not a server under test


@dataclass(frozen=True)
class Target:
    """One POST to measure: the URL (loopback), body and headers."""

    url: str
    body: bytes
    headers: Mapping[str, str]

    def connect(self) -> Connection:
        return Connection(self)


class Connection:
    """A keep-alive HTTP/1.1 connection sending ``target``'s request, again and again."""

    def __init__(self, target: Target) -> None:
        parts = urlsplit(target.url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
            raise ValueError("benchmarks send traffic to loopback only, to an explicit port")
        self._address = (parts.hostname, parts.port)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
        head += [f"{name}: {value}" for name, value in target.headers.items()]
        head.append(f"Content-Length: {len(target.body)}")
        self._request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + target.body
        self._sock: socket.socket | None = None
        self._buffer = b""

    def post(self) -> int:
        """Sends the request, reads the whole answer; its status. Reconnects first when the
        server closed the connection after the previous answer."""
        sock = self._sock or self._open()
        sock.sendall(self._request)
        while (end := self._buffer.find(_HEAD_END)) < 0:
            if len(self._buffer) > _HEAD_MAX:
                raise RuntimeError("an answer head without end")
            self._buffer += _receive(sock)
        head = self._buffer[:end].lower()
        status = int(head.split(b" ", 2)[1])
        length = _content_length(head)
        body_end = end + len(_HEAD_END) + length
        while len(self._buffer) < body_end:
            self._buffer += _receive(sock)
        self._buffer = self._buffer[body_end:]
        if b"\r\nconnection: close" in head:
            self.close()
        return status

    def _open(self) -> socket.socket:
        self._sock = socket.create_connection(self._address, timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _receive(sock: socket.socket) -> bytes:
    chunk = sock.recv(262_144)
    if not chunk:
        raise ConnectionError("the server closed the connection mid-answer")
    return chunk


def _content_length(head: bytes) -> int:
    """The ``Content-Length`` of a lower-cased answer head (every contender sends one)."""
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        raise RuntimeError("an answer without Content-Length (chunked?) is not expected")
    start += len(b"\r\ncontent-length:")
    stop = head.find(b"\r\n", start)
    return int(head[start : stop if stop >= 0 else len(head)])


def sequential(target: Target, count: int, deadline_s: float) -> list[float]:
    """Seconds per request of up to ``count`` requests one after another (one connection).
    Raises RuntimeError on any answer but 200."""
    connection = target.connect()
    latencies: list[float] = []
    stop = time.perf_counter() + deadline_s
    try:
        while len(latencies) < count and time.perf_counter() < stop:
            started = time.perf_counter()
            status = connection.post()
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
        connection = target.connect()
        try:
            barrier.wait()
            while counts[index] + failures[index] < per_client and time.perf_counter() < stop:
                sent = time.perf_counter()
                if connection.post() == 200:
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
