"""The MLLP listener: HL7 v2 messages over TCP from an interface engine, answered with ACKs.

Framing is MLLP release 1: ``0x0B`` message ``0x1C 0x0D``. Every complete frame gets an
answer before the connection reads on, even a frame that is not HL7 at all (AR with a minimal
MSH) or one over the size limit (AR, after skipping to the frame's end), because interface
engines resend or stall a queue on a missing ACK. Messages on one connection are handled in
order; connections are served concurrently; scoring runs in a worker thread so the event loop
keeps reading other connections. docs/mllp.md tells an interface analyst what to expect.

The listener knows only the ``DataPlane`` it is handed: it builds a ``ScoreRequest`` from the
frame bytes and answers with the acknowledgements ``agent.intake.mllp.acks`` makes of the
outcome (where agent errors meet HL7 ACK codes). With ``results_to`` configured, it also
spools an ORU^R01 per scored message before answering AA, and owns the sender that
delivers them (``mllp_results``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace

from agent.dataplane import DataPlane
from agent.errors import (
    AgentError,
    ConfigError,
    Hl7Error,
    InternalError,
    RecordError,
    RequestTooLarge,
    Throttled,
    Unauthorized,
)
from agent.hl7 import framing
from agent.hl7.ack import AckCode, parse_header
from agent.hl7.framing import END_BLOCK, START_BLOCK, unframe
from agent.hl7.oru import ResultAddressing, build_result_message
from agent.intake.edge_audit import RefusalAudit
from agent.intake.mllp.acks import (
    NOT_HL7,
    NOT_SPOOLED,
    TOO_LARGE,
    Outcome,
    acknowledgements,
    outcome_of_error,
    outcome_of_result,
)
from agent.intake.mllp.config import MllpConfig
from agent.intake.mllp.outcomes import OutcomeReader
from agent.intake.mllp.results import ResultSender, ResultSpool, SpoolFull
from agent.limits import Limits
from agent.logs import ThrottledWarning, throttle_accept_failures
from agent.records.config import RecordsConfig
from agent.types import IntakePath, Prediction, RecordFormat, ScoreRequest

log = logging.getLogger(__name__)

_READ_CHUNK = 65536  # bytes per read from the socket
_OVERSIZE_HEAD = 8192  # bytes of an oversize frame kept to address its AR
_PARTIAL_FRAME_GRACE = 5.0  # seconds (at most drain_timeout) a frame arriving on stop may take


@dataclass(frozen=True)
class _Frame:
    content: bytes
    oversize: bool = False  # content is then only the head of the frame


@dataclass(eq=False)
class _Connection:
    task: asyncio.Task[None]
    busy: bool = False  # handling a frame: let it finish on stop
    partial: bool = False  # a frame has begun arriving: let it complete on stop (bounded)


class MllpListener:
    """Serves MLLP on ``config.host:config.port`` until ``stop``; scores with ``plane``."""

    def __init__(
        self,
        config: MllpConfig,
        plane: DataPlane,
        limits: Limits,
        records: RecordsConfig | None = None,
    ) -> None:
        if not config.model:
            raise ConfigError("the MLLP listener needs a model to score with (mllp.model)")
        self._outcomes = (
            OutcomeReader(config.outcomes, config.model, records or RecordsConfig())
            if config.outcomes
            else None
        )
        self._config = config
        self._model = config.model
        self._plane = plane
        self._limits = limits
        self._max_bytes = config.max_message_bytes or limits.hl7_message_max
        self._networks = [ipaddress.ip_network(c, strict=False) for c in config.allowed_clients]
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._per_client: Counter[str] = Counter()  # open connections by client address
        interval = limits.log_repeat_interval
        self._refused_full = ThrottledWarning(log, "mllp connection refused: too many", interval)
        self._refused_client = ThrottledWarning(
            log, "mllp connection refused: too many from one client", interval
        )
        self._refused_outside = ThrottledWarning(
            log, "mllp connection refused: client not allowed", interval
        )
        self._edge = RefusalAudit(plane, limits.audit_refusal_window)
        self._stopping = False
        self._spool: ResultSpool | None = None
        self._sender: ResultSender | None = None
        self._addressing = ResultAddressing()

    @property
    def port(self) -> int:
        """The bound port (useful when the config asked for port 0)."""
        if self._server is None:
            raise RuntimeError("the listener is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Open the results spool and start its sender (when ``results_to`` is set), bind
        and start accepting; returns once listening."""
        destination = self._config.results_to
        if destination is not None:
            try:
                self._spool = await asyncio.to_thread(
                    ResultSpool, destination.spool, destination.spool_max_messages
                )
            except OSError as exc:
                raise ConfigError("mllp.results_to.spool cannot be used as a spool folder") from exc
            self._sender = ResultSender(destination, self._spool)
            self._addressing = destination.addressing
        ssl_context = self._ssl_context()
        throttle_accept_failures(asyncio.get_running_loop(), self._limits.log_repeat_interval)
        server = await asyncio.start_server(
            self._serve,
            host=self._config.host,
            port=self._config.port,
            ssl=ssl_context,
            ssl_handshake_timeout=self._config.handshake_timeout if ssl_context else None,
            limit=_READ_CHUNK,
        )
        self._server = server
        if self._sender is not None:
            self._sender.start()
        self._stopping = False
        log.info("mllp listening", extra={"host": self._config.host, "port": self.port})

    async def stop(self) -> None:
        """Stop accepting, let every message being handled finish and get its ACK, close
        idle connections, then stop the results sender, letting its exchange in progress
        finish (results not yet delivered stay spooled for the next start); all within
        ``limits.drain_timeout``. A frame still arriving gets ``_PARTIAL_FRAME_GRACE``
        seconds, at most the drain timeout, to complete and be answered."""
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.drain_timeout
        grace = min(_PARTIAL_FRAME_GRACE, self._limits.drain_timeout)
        for conn in list(self._connections):
            if conn.busy or conn.partial:  # also a busy one: its next frame may be arriving
                loop.call_later(grace, _cancel_if_unfinished, conn)
            else:
                conn.task.cancel()
        tasks = [c.task for c in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._limits.drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("mllp drain timed out", extra={"count": len(pending)})
                await asyncio.wait(pending)
        await self._server.wait_closed()
        self._server = None
        if self._sender is not None:
            await self._sender.stop(max(0.0, deadline - loop.time()))
            self._sender = None
        self._edge.flush()
        log.info("mllp stopped")

    # --- one connection -------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = None if task is None or self._stopping else self._refusal(host)
        if task is None or self._stopping or refusal is not None:
            if refusal is not None:
                self._refuse(host, "connection", refusal)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        conn = _Connection(task=task)
        self._connections.add(conn)
        self._per_client[host] += 1
        try:
            async with contextlib.aclosing(self._frames(reader, conn)) as frames:
                async for frame in frames:
                    conn.busy = True
                    for ack in await self._answer(frame, host):
                        writer.write(framing.frame(ack))
                    await writer.drain()
                    conn.busy = False
        except asyncio.CancelledError:
            pass  # stop() closes idle connections this way; nothing is owed to them
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            log.info("mllp connection ended", extra={"error_type": type(exc).__name__})
        finally:
            self._connections.discard(conn)
            self._per_client[host] -= 1
            if not self._per_client[host]:
                del self._per_client[host]
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    def _refusal(self, host: str) -> AgentError | None:
        """Why a new connection from ``host`` may not be served (None: it may): the client
        is not allowed, or the listener or this client has all its connections open.
        Refusals are logged at a bounded rate (a flood of them is counted, not logged each)."""
        if self._networks:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                address = None
            if address is None or not any(address in net for net in self._networks):
                self._refused_outside()
                return Unauthorized("client not allowed")
        if len(self._connections) >= self._config.max_connections:
            self._refused_full()
            return Throttled("too many connections")
        if self._per_client[host] >= self._config.max_connections_per_client:
            self._refused_client()
            return Throttled("too many connections from one client")
        return None

    def _refuse(self, peer: str, route: str, error: AgentError) -> None:
        """A connection or frame refused before the data plane saw it: counted, and audited
        as the HTTP edge audits its refusals (``agent.intake.edge_audit``), ``route`` saying
        what was refused (``connection``, ``frame``)."""
        self._plane.count_refusal(self._model, IntakePath.mllp, error)
        self._edge.record_unread(IntakePath.mllp, peer, route, error.reason, self._model)

    async def _frames(
        self, reader: asyncio.StreamReader, conn: _Connection
    ) -> AsyncGenerator[_Frame, None]:
        """Complete frames in arrival order. A frame past the size limit is skipped to its
        end block and yielded as ``oversize`` with its head. Bytes before the start block
        (stray line feeds between frames) are ignored. Ends at EOF, on idle timeout, and when
        the listener stops once no complete frame is left and none is arriving
        (``conn.partial`` tells ``stop`` a frame is arriving). The idle deadline runs from
        the connection's start or its last frame's answer, not from its last byte: a
        client dripping a frame a byte at a time is closed like a silent one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.idle_timeout
        buffer = bytearray()
        searched = 0  # bytes of ``buffer`` known to hold no end block
        head: bytes | None = None  # set while skipping an oversize frame
        limit = self._max_bytes + len(START_BLOCK) + len(END_BLOCK)
        while True:
            end = buffer.find(END_BLOCK, searched)
            if end >= 0:
                content = bytes(buffer[:end])
                del buffer[: end + len(END_BLOCK)]
                searched = 0
                if head is not None:
                    yield _Frame(head, oversize=True)
                    head = None
                else:
                    message = unframe(content)
                    if len(message) > self._max_bytes:
                        yield _Frame(message[:_OVERSIZE_HEAD], oversize=True)
                    else:
                        yield _Frame(message)
                deadline = loop.time() + self._config.idle_timeout  # answered: a new idle
                continue
            searched = max(0, len(buffer) - len(END_BLOCK) + 1)
            if head is None and len(buffer) > limit:
                head = unframe(bytes(buffer[:_OVERSIZE_HEAD]))
            if head is not None:
                del buffer[: max(0, len(buffer) - 1)]  # keep a byte: 0x1C may end the chunk
                searched = 0
            conn.partial = head is not None or bool(buffer.strip(b"\r\n\t "))
            if self._stopping and not conn.partial:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(reader.read(_READ_CHUNK), remaining)
            if not chunk:
                return
            buffer += chunk

    async def _answer(self, frame: _Frame, peer: str) -> list[bytes]:
        header = parse_header(frame.content)
        if frame.oversize:
            self._refuse(peer, "frame", RequestTooLarge("frame over the size limit"))
            outcome = Outcome(AckCode.reject, (TOO_LARGE,))
        elif header is None:
            self._refuse(peer, "frame", Hl7Error("not an HL7 message"))
            outcome = Outcome(AckCode.reject, (NOT_HL7,))
        elif self._outcomes is not None and self._outcomes.concerns(header):
            outcome = await self._outcome_message(self._outcomes, frame.content, peer)
        else:
            outcome = await self._score(frame.content, peer)
        if outcome.errors:
            log.info(
                "mllp message not accepted",
                extra={"reason": outcome.errors[0].reason, "status": outcome.code.value},
            )
        return acknowledgements(header, outcome, self._config.ack_mode)

    async def _score(self, message: bytes, peer: str) -> Outcome:
        request = ScoreRequest(
            model=self._model,
            body=message,
            format=RecordFormat.hl7v2,
            intake=IntakePath.mllp,
            caller=f"mllp:{peer}" if peer else "mllp",
            request_id=uuid.uuid4().hex,
        )
        try:
            result = await asyncio.to_thread(self._plane.score, request)
        except Exception as exc:
            return self._not_handled(exc, self._model)
        outcome = outcome_of_result(result)
        if outcome.code is not AckCode.accept:
            return outcome  # not spooled: the engine keeps (or resends) the message
        predictions = result.predictions
        if self._spool is not None and self._sender is not None:
            try:
                await asyncio.to_thread(
                    _spool_result, self._spool, message, predictions, self._addressing
                )
            except (OSError, SpoolFull) as exc:
                # AA promises the result is on its way; without it on disk, the sender
                # should resend the message later instead.
                log.error("mllp result not spooled", extra={"error_type": type(exc).__name__})
                return Outcome(AckCode.error, (NOT_SPOOLED,))
            self._sender.notify()
        return outcome

    async def _outcome_message(self, reader: OutcomeReader, message: bytes, peer: str) -> Outcome:
        """A message of a configured outcome type: AA once its outcomes are recorded (joined
        to an earlier prediction or not: an outcome whose prediction was never made here is
        no error), AE naming why not (``no_outcome``, ``no_patient``, ``not_enabled``, the
        model's state), AR when unreadable. Not an outcome after all (an ORU without the
        configured code): scored as usual."""
        model = self._model
        try:
            reports = await asyncio.to_thread(reader.read, message)
            if reports is None:
                return await self._score(message, peer)
            for model, batch in reports.items():
                receipt = await asyncio.to_thread(self._plane.record_outcomes, model, batch)
                log.info(
                    "mllp outcomes recorded", extra={"model": model, "count": receipt.received}
                )
        except Exception as exc:
            if isinstance(exc, AgentError):
                self._plane.count_refusal(model, IntakePath.mllp, exc)
            return replace(self._not_handled(exc, model), undone="not recorded")
        return Outcome(AckCode.accept)

    def _not_handled(self, exc: Exception, model: str) -> Outcome:
        """The ACK for a message the data plane could not take; an unexpected exception is
        logged (its type only) and counted as ``internal``."""
        if not isinstance(exc, AgentError):
            log.error("mllp message failed unexpectedly", extra={"error_type": type(exc).__name__})
            self._plane.count_refusal(model, IntakePath.mllp, InternalError("unexpected error"))
        return outcome_of_error(exc)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._config.tls_cert is None or self._config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._config.tls_cert, self._config.tls_key)
        if self._config.tls_client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self._config.tls_client_ca)
        return context


def _spool_result(
    spool: ResultSpool,
    message: bytes,
    predictions: Sequence[Prediction],
    addressing: ResultAddressing,
) -> None:
    """Write the ORU^R01 for ``predictions`` to the spool (before the AA is sent). A
    message whose result could not be filed safely (no PID-3, several patients) is
    still acknowledged AA, its scoring having succeeded; the result is logged as not
    sent, with the reason."""
    try:
        result = build_result_message(message, predictions, addressing=addressing)
    except RecordError as exc:
        log.warning("mllp result not sent", extra={"reason": exc.reason, "outcome": "not_built"})
        return
    spool.add(result)


def _cancel_if_unfinished(conn: _Connection) -> None:
    """End of the grace a frame arriving at stop had: drop it if it is still arriving."""
    if conn.partial and not conn.busy:
        conn.task.cancel()
