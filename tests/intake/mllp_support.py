"""Support for the MLLP tests: a small real scorer, a listener on its own event loop in a
thread (so blocking clients, third-party ones included, can talk to it), an outbound MLLP
destination that acknowledges results, certificates and framing helpers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hl7
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hl7apy.parser import parse_message

from agent.errors import Hl7Error, UnmappableRecord, UnsupportedMediaType
from agent.intake.mllp.config import MllpConfig
from agent.intake.mllp.listener import MllpListener
from agent.limits import Limits
from agent.types import FeatureValue, FeatureVector, Prediction, ScoreRequest
from tests.support.plane import ScriptedPlane

SB, EB = b"\x0b", b"\x1c\x0d"


def message(
    control_id: str,
    *,
    kind: str = "ORU^R01^ORU_R01",
    version: str = "2.5",
    accept_ack: str = "",
    application_ack: str = "",
    obx: bool = True,
    delay: float = 0.0,
) -> bytes:
    """An HL7 v2 message from LAB at HOSP to EDGE; ``delay`` asks the scorer to take time."""
    msh = (
        f"MSH|^~\\&|LAB|HOSP|EDGE|ICU|20260101120000||{kind}|{control_id}|P|{version}"
        f"|||{accept_ack}|{application_ack}"
    )
    segments = [msh, "PID|1||MRN-4711^^^HOSP^MR||Doe^Jane||19500101|F"]
    if obx:
        segments.append(f"OBX|1|NM|8310-5^Body temperature^LN||{38.5 + delay}|Cel|||||F")
    return ("\r".join(segments) + "\r").encode()


@dataclass
class RecordingScorer(ScriptedPlane):
    """Parses the message with hl7apy, refuses what a real pipeline refuses (unparseable:
    bad_input; not ORU/ADT: unsupported_media_type; no OBX: unmappable) and returns one
    prediction. Records the control ids in the order it scored them."""

    scored: list[str] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    requests: list[ScoreRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ScriptedPlane.__init__(self)

    def predict(self, request: ScoreRequest) -> list[Prediction]:
        text = request.body.decode("latin-1")
        try:
            parsed = parse_message(text, find_groups=False)
        except Exception as exc:
            raise Hl7Error("the message is not valid HL7 v2") from exc
        event = parsed.msh.msh_9.msh_9_1.value
        control_id = parsed.msh.msh_10.value
        with self.lock:
            self.requests.append(request)
            self.threads.add(threading.current_thread().name)
        if event not in ("ORU", "ADT"):
            raise UnsupportedMediaType(f"message type {event} is not read here")
        observations = [s for s in parsed.children if s.name == "OBX"]
        if not observations:
            raise UnmappableRecord("feature temperature has no observation")
        value = float(observations[0].obx_5.value)
        if value > 38.5:  # message(delay=...) encodes a wait in the temperature
            time.sleep(value - 38.5)
        with self.lock:
            self.scored.append(control_id)
        vector = FeatureVector(
            values=(value,),
            features=(FeatureValue("temperature", value, value, "Observation 8310-5"),),
        )
        return [
            Prediction(
                model=request.model,
                version="1.2.0",
                bundle_digest="d" * 64,
                outputs={"risk": 0.125, "risk|untreated": 0.5},
                vector=vector,
            )
        ]


@contextmanager
def running_listener(
    scorer: RecordingScorer, limits: Limits | None = None, **config: Any
) -> Iterator[tuple[MllpListener, asyncio.AbstractEventLoop]]:
    """A started listener on 127.0.0.1 (a free port) served by a loop in a thread."""
    settings = {"enabled": True, "port": 0, "model": "sepsis", **config}
    listener = MllpListener(MllpConfig(**settings), scorer, limits or Limits(drain_timeout=5))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="mllp-loop", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(listener.start(), loop).result(10)
    try:
        yield listener, loop
    finally:
        asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_frame(sock: socket.socket, pending: bytearray) -> bytes:
    """The next ACK (without framing) from ``sock``; ``pending`` keeps bytes read past it."""
    while True:
        end = pending.find(EB)
        if end >= 0:
            frame = bytes(pending[:end])
            del pending[: end + 2]
            assert frame.startswith(SB), frame[:20]
            return frame[1:]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the listener closed the connection")
        pending += chunk


def segments(ack: bytes, name: str) -> list[list[str]]:
    """Every ``name`` segment of ``ack`` as its fields, indexed by field number (for MSH,
    index n is MSH-n: the field separator is MSH-1)."""
    found = []
    for line in ack.decode("latin-1").split("\r"):
        fields = line.split("|")
        if fields[0] != name:
            continue
        if name == "MSH":
            fields.insert(1, "|")
        found.append(fields)
    return found


def msa(ack: bytes) -> list[str]:
    (segment,) = segments(ack, "MSA")
    return segment


def self_signed_cert(folder: Path, name: str = "mllp") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Destination:
    """An interface engine's inbound MLLP channel: an asyncio server in its own thread that
    records each message and answers with python-hl7's ``create_ack`` (code ``code``)."""

    def __init__(
        self,
        code: str = "AA",
        port: int = 0,
        misaddress: int = 0,
        tls: ssl.SSLContext | None = None,
        one_per_connection: str = "",
    ) -> None:
        self.code = code
        # "close": close after each ACK, as some engines do; "drop": keep the connection
        # open but close it, unanswered, when a second message arrives on it
        self.one_per_connection = one_per_connection
        self._tls = tls
        self.misaddress = misaddress  # this many first answers acknowledge another message
        self.received: list[bytes] = []
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                data = await reader.readuntil(EB)
                body = data[data.index(SB) + 1 : -2]
                self.received.append(body)
                if self.misaddress:
                    self.misaddress -= 1
                    body = body.replace(body.split(b"|")[9], b"NOPE", 1)
                ack = hl7.parse(body.decode("latin-1")).create_ack(
                    self.code,
                    message_id=f"ACK{len(self.received)}",
                    application="EHR",
                    facility="HOSP",
                )
                writer.write(SB + str(ack).encode("latin-1") + EB)
                await writer.drain()
                if self.one_per_connection == "drop":
                    await reader.readuntil(EB)
                    return
                if self.one_per_connection == "close":
                    return
        except (asyncio.IncompleteReadError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    def __enter__(self) -> Destination:
        self._thread.start()

        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._serve, "127.0.0.1", self._port, ssl=self._tls)

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        server = self._server

        async def close() -> None:
            server.close()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def control_ids(self) -> list[str]:
        return [m.split(b"|")[9].decode() for m in self.received]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def fixture_message(name: str, *, original_mode: bool = True) -> bytes:
    """A fixture message as if sent now (``recent``) and, for original mode, MSH-15/16
    emptied."""
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "hl7" / name
    return recent(fixture.read_bytes(), original_mode=original_mode)


FIXTURES_NOW = dt.datetime(2026, 3, 15, 12, tzinfo=dt.UTC)  # the fixtures' clinical now


def recent(raw: bytes, *, original_mode: bool = True) -> bytes:
    """``raw`` (an HL7 message with the fixtures' times, ``...+0000``) with every time
    moved by one offset, so that the fixtures' clinical now is now: the listener scores as
    of now, and the values keep their order and their ages."""
    shift = dt.datetime.now(dt.UTC) - FIXTURES_NOW

    def moved(match: re.Match[bytes]) -> bytes:
        stamp = dt.datetime.strptime(match[0].decode(), "%Y%m%d%H%M%S%z") + shift
        return stamp.strftime("%Y%m%d%H%M%S+0000").encode()

    raw = re.sub(rb"20[0-9]{12}\+0000", moved, raw)
    if original_mode:
        raw = raw.replace(b"|P|2.5|||AL|NE", b"|P|2.5", 1)
    return raw
