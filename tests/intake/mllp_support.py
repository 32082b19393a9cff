"""Support for the MLLP tests: a small real scorer, a listener on its own event loop in a
thread (so blocking clients, third-party ones included, can talk to it), and framing helpers."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hl7apy.parser import parse_message

from agent.errors import Hl7Error, UnmappableRecord, UnsupportedMediaType
from agent.intake.mllp import MllpConfig, MllpListener
from agent.limits import Limits
from agent.types import FeatureValue, FeatureVector, Prediction, ScoreRequest

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
class RecordingScorer:
    """Parses the message with hl7apy, refuses what a real pipeline refuses (unparseable:
    bad_input; not ORU/ADT: unsupported_media_type; no OBX: unmappable) and returns one
    prediction. Records the control ids in the order it scored them."""

    scored: list[str] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    requests: list[ScoreRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def score(self, request: ScoreRequest) -> list[Prediction]:
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
                model=request.model, version="1.2.0", bundle_digest="d" * 64,
                outputs={"risk": 0.125, "risk|untreated": 0.5}, vector=vector,
            )
        ]

    def score_vector(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise NotImplementedError("the MLLP listener never scores raw vectors")


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
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path
