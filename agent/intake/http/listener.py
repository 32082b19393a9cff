"""The HTTP listener: uvicorn's HTTP/1.1 protocol behind an admission gate at accept.

uvicorn 0.55 bounds requests, not connections: ``limit_concurrency`` answers 503 only once a
request arrives, ``timeout_keep_alive`` starts only after a first response, and TLS
handshakes run under asyncio's 60 s default. A client that opens connections and sends
nothing (or never finishes its TLS handshake) therefore held a descriptor, and with TLS a
256 KiB read buffer, for ever: 20,000 of them exhausted the descriptors and froze
``/healthz``, 10,000 TLS ones took the agent to 5.7 GB.

So the agent owns the listening socket and admits each connection at accept, before any
TLS state is allocated:

* at most ``limits.http_connections_max`` connections are open (TLS handshakes included);
  when full, the oldest connection with no request in progress is closed to make room:
  first one that never started a request (idle since its connect, still in its TLS
  handshake or still sending its first request head), else a keep-alive one between
  requests. So an idle flood cannot lock real clients out. When every connection has a
  request in progress, the new one is closed at once. Both are logged at a bounded rate;
* asyncio accepts up to ``backlog`` connections per loop turn and admits them before any is
  read: the backlog is a quarter of the cap, so a connection admitted in one burst cannot
  be evicted by the rest of that burst before its request is read;
* a connection must have a request in progress within ``limits.http_idle_timeout`` of its
  accept (TLS handshake included) and of each earlier request's start, else it is closed:
  a slow sender of headers is bounded like an idle one;
* TLS is started by the agent (``loop.start_tls``) with that same bound on the handshake,
  and at most ``limits.http_tls_handshakes_max`` handshakes run at once (the oldest is
  closed for a new one): asyncio gives each TLS connection a 256 KiB read buffer from its
  start, so connections that never finish a handshake must not reach the full cap.

Requests are parsed by uvicorn's ``httptools`` protocol (llhttp, in C): about 0.1 ms of CPU
less per request than its pure-Python ``h11`` one (bench/, docs/benchmarks.md). llhttp keeps
no bound on a request head of its own, so ``_HttpProtocol`` counts the bytes read while no
head is complete and answers 431 and closes once they pass ``limits.http_header_max``,
telling ``on_head_refused`` the peer's address (counted and audited: ``refusals.py``).
Once a request's whole body is in, its scope gets the extension ``BODY_RECEIVED``: the guard
then reads the body without arming its deadline, as no read can wait any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from agent.limits import Limits
from agent.logs import ThrottledWarning, throttle_accept_failures

log = logging.getLogger(__name__)

BODY_RECEIVED = "agent.body_received"
"""The ASGI scope extension ``_HttpProtocol`` adds once the request's whole body is read
from the socket (uvicorn's ``receive`` then answers at once: it cannot wait)."""


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request head (target and headers).

    A head larger than ``head_max`` bytes is answered 431 and the connection closed, and
    nothing of that request reaches the app. Checked twice: a complete head by its parsed
    size, and a head still incomplete by the bytes read since the previous request ended
    (llhttp buffers a partial header line without limit), so a slow or endless head is cut
    as soon as it passes the cap."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        head_max: int,
        on_head_refused: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(config=config, server_state=server_state, app_state=app_state)
        self._head_max = head_max
        self._on_head_refused = on_head_refused
        self._head_read = 0  # bytes read while no head is complete
        self._in_head = True
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_read += len(data)
        super().data_received(data)
        if self._in_head and self._head_read > self._head_max:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._head_max:
            self._refuse_head()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_read = 0
        if not self._refused:
            super().on_message_complete()
            self.scope.setdefault("extensions", {})[BODY_RECEIVED] = {}

    def _refuse_head(self) -> None:
        if self._refused:
            return
        self._refused = True
        if self._on_head_refused is not None:
            peer = self.transport.get_extra_info("peername")
            self._on_head_refused(peer[0] if isinstance(peer, tuple) else "unknown")
        message = f"request head larger than {self._head_max} bytes".encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    *(
                        name + b": " + value + b"\r\n"
                        for name, value in self.server_state.default_headers
                    ),
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(message),
                    b"connection: close\r\n\r\n",
                    message,
                ]
            )
        )
        self.transport.close()


class _Connection(asyncio.Protocol):
    """The protocol asyncio sees for one accepted connection: admitted by the gate, it
    upgrades to TLS when configured and hands every event to uvicorn's protocol."""

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self._inner: _HttpProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._cycle_seen: object = None
        self._early: list[bytes] = []  # bytes read right after the handshake, before _start

    # --- what the gate asks --------------------------------------------------------------
    def idle(self) -> bool:
        """No request in progress: never had one, between two, or still in its handshake."""
        if self._inner is None:
            return True
        cycle = self._inner.cycle
        return cycle is None or cycle.response_complete

    def served(self) -> bool:
        """Has started at least one request (a keep-alive client, not a mere connect)."""
        return self._inner is not None and self._inner.cycle is not None

    def close(self) -> None:
        """Close at once (evicted or past its deadline); uvicorn is told as for a client
        that went away."""
        if self._handshake is not None and not self._handshake.done():
            self._handshake.cancel()
        if self._transport is not None:
            self._transport.abort()

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)  # a TCP stream: create_server's
        self._transport = raw
        if not self._gate.admit(self):
            raw.abort()
            return
        self._arm_deadline()
        tls = self._gate.tls
        if tls is None:
            self._start(raw)
        else:
            self._gate.handshaking(self)
            loop = asyncio.get_running_loop()
            self._handshake = loop.create_task(self._start_tls(raw, tls))

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    # --- inside --------------------------------------------------------------------------
    def _start(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._inner = self._gate.inner_protocol()
        self._inner.connection_made(transport)
        for data in self._early:
            self._inner.data_received(data)
        self._early.clear()

    async def _start_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                transport,
                self,
                tls,
                server_side=True,
                ssl_handshake_timeout=self._gate.idle_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, asyncio.CancelledError):
            transport.abort()
            self._end()  # no connection_lost reaches us for a handshake that failed
            return
        finally:
            self._gate.handshake_over(self)
        if secure is None or transport.is_closing():
            self._end()
            return
        self._start(secure)

    def _arm_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._gate.idle_timeout, self._check_deadline)

    def _check_deadline(self) -> None:
        """Closes a connection that started no request since the last check; a request in
        progress (its body has its own deadline in the guard) or a new one re-arms it."""
        cycle = self._inner.cycle if self._inner is not None else None
        if self.idle() and cycle is self._cycle_seen:
            self._gate.note_idle_close()
            self.close()
            return
        self._cycle_seen = cycle
        self._arm_deadline()

    def _end(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._gate.release(self)


class ConnectionGate:
    """Admission of HTTP connections at accept; see the module docstring for the rules.
    Used from the event loop only."""

    def __init__(
        self,
        limits: Limits,
        tls: ssl.SSLContext | None,
        inner_protocol: Callable[[], _HttpProtocol],
    ) -> None:
        self.tls = tls
        self.idle_timeout = limits.http_idle_timeout
        self.inner_protocol = inner_protocol
        self._max = limits.http_connections_max
        self._handshakes_max = limits.http_tls_handshakes_max
        self._open: dict[_Connection, None] = {}  # in accept order, oldest first
        self._handshaking: dict[_Connection, None] = {}  # in TLS handshake, oldest first
        interval = limits.log_repeat_interval
        self._evicted = ThrottledWarning(
            log, "http connection closed: connections full, oldest idle one", interval
        )
        self._refused = ThrottledWarning(
            log, "http connection refused: every connection has a request in progress", interval
        )
        self._handshake_evicted = ThrottledWarning(
            log, "http connection closed: TLS handshakes full, oldest one", interval
        )
        self._idle_closed = ThrottledWarning(
            log, "http connection closed: no request within the idle timeout", interval
        )

    def protocol(self) -> asyncio.Protocol:
        """The protocol factory for ``loop.create_server``."""
        return _Connection(self)

    def admit(self, connection: _Connection) -> bool:
        if len(self._open) >= self._max:
            oldest_idle = next((c for c in self._open if c.idle() and not c.served()), None)
            if oldest_idle is None:
                oldest_idle = next((c for c in self._open if c.idle()), None)
            if oldest_idle is None:
                self._refused()
                return False
            self._evicted()
            self.release(oldest_idle)
            oldest_idle.close()
        self._open[connection] = None
        return True

    def handshaking(self, connection: _Connection) -> None:
        """``connection`` begins its TLS handshake; past ``http_tls_handshakes_max`` the
        oldest one in handshake is closed (each holds a 256 KiB TLS read buffer)."""
        if len(self._handshaking) >= self._handshakes_max:
            oldest = next(iter(self._handshaking))
            self._handshake_evicted()
            self.handshake_over(oldest)
            oldest.close()
        self._handshaking[connection] = None

    def handshake_over(self, connection: _Connection) -> None:
        self._handshaking.pop(connection, None)

    def release(self, connection: _Connection) -> None:
        self._open.pop(connection, None)
        self._handshaking.pop(connection, None)

    def note_idle_close(self) -> None:
        self._idle_closed()


class HttpServer(uvicorn.Server):
    """uvicorn's server with the agent's listener: no signal handlers of its own (the
    daemon alone owns signals) and connections admitted by a ``ConnectionGate``."""

    def __init__(
        self,
        config: uvicorn.Config,
        limits: Limits,
        on_head_refused: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._limits = limits
        self._on_head_refused = on_head_refused
        self.gate: ConnectionGate | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        """Bind and serve through the gate (TLS from uvicorn's own context, built from the
        config's certificate settings); a bind error propagates as ``OSError``."""
        config = self.config
        loop = asyncio.get_running_loop()

        def inner() -> _HttpProtocol:
            return _HttpProtocol(
                config,
                self.server_state,
                self.lifespan.state,
                self._limits.http_header_max,
                self._on_head_refused,
            )

        self.gate = ConnectionGate(self._limits, config.ssl, inner)
        throttle_accept_failures(loop, self._limits.log_repeat_interval)
        server = await loop.create_server(
            self.gate.protocol,
            host=config.host,
            port=config.port,
            backlog=max(16, self._limits.http_connections_max // 4),
        )
        self.servers = [server]
        self.started = True
