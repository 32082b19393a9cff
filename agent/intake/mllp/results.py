"""Results to an outbound MLLP destination: a durable spool and the one sender that drains it.

The listener writes each result message to the spool (temp file, fsync, rename, fsync of the
folder) *before* it acknowledges the incoming message, so an AA means the result is on disk.
One background ``ResultSender`` sends the spooled messages oldest first over one MLLP
connection, each waiting for the destination's ACK:

- AA or CA (MSA-2 naming the message's control id): delivered, the file is deleted;
- AE, AR, CE or CR: refused by the destination, the file moves to ``rejected/`` with the
  ACK beside it (``<name>.ack``), for an analyst; it is never retried;
- no connection, no answer within ``ack_timeout``, or an answer that is not this message's
  ACK: the connection is dropped and the same file is tried again after a capped
  exponential backoff, for as long as it takes. Order is kept: nothing overtakes it.

The spool survives restarts: file names carry a sequence number that a new spool continues.
A crash after the destination accepted a message but before its file was deleted sends it
once more on restart, with the same MSH-10, by which the receiver can dedupe.

Spool files hold patient identifiers (PID-3) and results: files are created 0600 in a
folder made 0700. Log lines carry outcome, status, count and seconds, never content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.durable import fsync_dir, temp_name, write_atomic
from agent.hl7.ack import parse_ack, parse_header
from agent.hl7.framing import END_BLOCK, frame, unframe
from agent.intake.mllp.config import ResultsDestination

log = logging.getLogger(__name__)

_SUFFIX = ".hl7"
_QUEUED = "[0-9]*" + _SUFFIX  # sequence-numbered messages (durable's temp files start with a dot)
_ACCEPTED = frozenset({"AA", "CA"})
_MAX_ACK_BYTES = 1_000_000  # an ACK larger than this is not one


class SpoolFull(Exception):
    """The spool holds ``spool_max_messages`` results already."""


class ResultSpool:
    """The spool folder: a FIFO of result messages that survives crashes and restarts.

    Writes are atomic and durable (temp file, fsync, rename, fsync of the folder), so a
    reader sees a whole message or none. ``add`` may be called from several threads: a
    sequence number is taken and its file written under one lock, so the files appear in
    the order of their numbers and the sender never skips a message still being written.
    """

    def __init__(self, folder: Path, max_messages: int = 100_000) -> None:
        self.folder = folder
        self._max = max_messages
        self.rejected = folder / "rejected"
        self.rejected.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        for leftover in folder.glob(temp_name(folder / _QUEUED).name):  # a crash mid-write
            leftover.unlink()
        pending = self.pending()
        numbers = [_sequence(p) for p in (*pending, *self.rejected.glob(_QUEUED))]
        self._next = max(numbers, default=0) + 1
        self._count = len(pending)
        self._lock = threading.Lock()

    def add(self, message: bytes) -> Path:
        """Queue ``message`` durably; returns its file. Raises ``SpoolFull``, or OSError
        if it cannot write."""
        with self._lock:
            if self._count >= self._max:
                raise SpoolFull(f"the results spool holds {self._count} messages")
            path = self.folder / f"{self._next:012d}{_SUFFIX}"
            write_atomic(path, message, mode=0o600)
            self._next += 1
            self._count += 1
        return path

    def pending(self) -> list[Path]:
        """Queued messages, oldest first."""
        return sorted(self.folder.glob(_QUEUED))

    def delivered(self, path: Path) -> None:
        path.unlink()
        fsync_dir(self.folder)
        self._taken()

    def refused(self, path: Path, ack: bytes) -> None:
        """Move ``path`` to ``rejected/`` with the destination's ACK beside it."""
        write_atomic(self.rejected / (path.stem + ".ack"), ack, mode=0o600)
        os.replace(path, self.rejected / path.name)
        fsync_dir(self.rejected)
        fsync_dir(self.folder)
        self._taken()

    def _taken(self) -> None:
        with self._lock:
            self._count -= 1


class _TransportFailure(Exception):
    """The exchange did not complete (connection, timeout, not this message's ACK)."""


@dataclass
class SenderCounts:
    """What the sender did since it started: messages delivered, retries, refusals."""

    sent: int = 0
    retried: int = 0
    rejected: int = 0


class ResultSender:
    """Drains a ``ResultSpool`` to ``destination``, one message at a time, in order."""

    def __init__(self, destination: ResultsDestination, spool: ResultSpool) -> None:
        self._destination = destination
        self._spool = spool
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False  # a message is being delivered: stop lets it finish
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.counts = SenderCounts()

    def start(self) -> None:
        """Start sending in the background (whatever the spool already holds first)."""
        self._stopping = False
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="mllp-results")
        log.info(
            "mllp results sender started",
            extra={"count": len(self._spool.pending()), "outcome": "pending"},
        )

    def notify(self) -> None:
        """A message was spooled: send it without waiting for the next poll."""
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Let the exchange in progress finish (within ``timeout`` seconds), then stop.
        What is still spooled is sent after the next start."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        if not self._busy:
            task.cancel()
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._disconnect()
        log.info(
            "mllp results sender stopped",
            extra={"count": len(self._spool.pending()), "outcome": "pending"},
        )

    async def _run(self) -> None:
        delay = self._destination.retry_initial
        while not self._stopping:
            self._wake.clear()  # before looking, so a message spooled meanwhile wakes us
            pending = await asyncio.to_thread(self._spool.pending)
            if not pending:
                await self._wake.wait()
                continue
            self._busy = True
            try:
                await self._deliver(pending[0])
            except (_TransportFailure, OSError) as failure:
                # OSError: the spool itself failed (a disk error); the file stays, as after a
                # transport failure, and the same message is tried again.
                self._busy = False
                self.counts.retried += 1
                await self._disconnect()
                reason = str(failure) if isinstance(failure, _TransportFailure) else "spool"
                log.warning(
                    "mllp result not delivered; retrying",
                    extra={"reason": reason, "outcome": "retried", "seconds": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._destination.retry_max)
            else:
                delay = self._destination.retry_initial
            finally:
                self._busy = False

    async def _deliver(self, path: Path) -> None:
        message = await asyncio.to_thread(path.read_bytes)
        header = parse_header(message)
        control_id = header.control_id if header is not None else ""
        ack = await self._exchange(message)
        answer = parse_ack(ack)
        if answer is None or answer[1] != control_id:
            raise _TransportFailure("not_its_ack")
        code = answer[0]
        if code in _ACCEPTED:
            await asyncio.to_thread(self._spool.delivered, path)
            self.counts.sent += 1
            log.info("mllp result delivered", extra={"outcome": "sent", "status": code})
        else:
            await asyncio.to_thread(self._spool.refused, path, ack)
            self.counts.rejected += 1
            log.warning(
                "mllp result refused by the destination",
                extra={"outcome": "rejected", "status": code},
            )

    async def _exchange(self, message: bytes) -> bytes:
        """Send one framed message and read one framed reply, within ``ack_timeout`` each.

        A kept connection that the destination has closed while idle (some engines close
        after every ACK) is reopened, also when the close is only noticed on this send: a
        connection that ends without a byte of answer is retried once, at once, on a new
        one. Any other failure is the caller's to retry later."""
        if self._stream is not None:
            if not self._stream[0].at_eof():
                try:
                    return await _round_trip(self._stream, message, self._destination.ack_timeout)
                except _TransportFailure as failure:
                    if str(failure) != "closed":
                        raise
            await self._disconnect()
        try:
            self._stream = await asyncio.wait_for(
                asyncio.open_connection(
                    self._destination.host,
                    self._destination.port,
                    ssl=self._ssl_context(),
                    limit=_MAX_ACK_BYTES,
                ),
                self._destination.ack_timeout,
            )
        except TimeoutError as exc:
            raise _TransportFailure("timeout") from exc
        except OSError as exc:  # ssl.SSLError included
            raise _TransportFailure("connection") from exc
        return await _round_trip(self._stream, message, self._destination.ack_timeout)

    async def _disconnect(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream[1].close()
            with contextlib.suppress(Exception):
                await stream[1].wait_closed()

    def _ssl_context(self) -> ssl.SSLContext | None:
        d = self._destination
        if not d.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=d.tls_ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if d.tls_cert is not None and d.tls_key is not None:
            context.load_cert_chain(d.tls_cert, d.tls_key)
        return context


async def _round_trip(
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], message: bytes, timeout: float
) -> bytes:
    """One framed message out, one framed reply in, ``timeout`` seconds for each. A
    connection that ends before any byte of the reply fails as ``closed``."""
    reader, writer = stream
    try:
        writer.write(frame(message))
        await asyncio.wait_for(writer.drain(), timeout)
        return await asyncio.wait_for(_read_frame(reader), timeout)
    except TimeoutError as exc:
        raise _TransportFailure("timeout") from exc
    except asyncio.LimitOverrunError as exc:
        raise _TransportFailure("too_large") from exc
    except asyncio.IncompleteReadError as exc:
        raise _TransportFailure("closed" if not exc.partial else "connection") from exc
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _TransportFailure("closed") from exc
    except OSError as exc:
        raise _TransportFailure("connection") from exc


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next MLLP frame's content (bytes before its start block are skipped)."""
    return unframe(await reader.readuntil(END_BLOCK))


def _sequence(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return 0
