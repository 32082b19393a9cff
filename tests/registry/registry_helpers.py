"""Real things for the registry tests: a published file registry, a CA and a TLS server
on 127.0.0.1 (http.server + ssl in a thread), and servers that misbehave."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("test hospital CA"))
        .issuer_name(_name("test hospital CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr log."""


class _Endless(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and bytes until the client hangs up; ``huge`` also
    announces a Content-Length of a terabyte."""

    huge = False

    def do_GET(self) -> None:
        self.send_response(200)
        if self.huge:
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        chunk = b"\x00" * 65536
        with contextlib.suppress(OSError):
            while True:
                self.wfile.write(chunk)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr log."""


class _Huge(_Endless):
    huge = True


class _Drip(http.server.BaseHTTPRequestHandler):
    """Answers 200 and sends one byte every 50 ms forever: never idle long enough for a
    read timeout, never done."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        with contextlib.suppress(OSError):
            while True:
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr log."""


class _Failing(http.server.BaseHTTPRequestHandler):
    """503 for the first ``failures`` requests, then serves ``folder`` files."""

    def do_GET(self) -> None:
        server = self.server
        if getattr(server, "failures_left", 0) > 0:
            server.failures_left -= 1  # type: ignore[attr-defined]
            self.send_error(503)
            return
        path = Path(server.folder) / self.path.lstrip("/")  # type: ignore[attr-defined]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr log."""


@contextlib.contextmanager
def serve(
    handler: type[http.server.BaseHTTPRequestHandler],
    cert: tuple[Path, Path] | None = None,
    **attributes: object,
) -> Iterator[str]:
    """Run ``handler`` on 127.0.0.1 (TLS when ``cert`` is given); yield the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    for key, value in attributes.items():
        setattr(server, key, value)
    scheme = "http"
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert[0]), str(cert[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_folder(folder: Path, cert: tuple[Path, Path]) -> contextlib.AbstractContextManager[str]:
    return serve(partial(_QuietFiles, directory=str(folder)), cert)  # type: ignore[arg-type]


def serve_endless(cert: tuple[Path, Path]) -> contextlib.AbstractContextManager[str]:
    return serve(_Endless, cert)


def serve_huge_length(cert: tuple[Path, Path]) -> contextlib.AbstractContextManager[str]:
    return serve(_Huge, cert)


def serve_drip(cert: tuple[Path, Path]) -> contextlib.AbstractContextManager[str]:
    return serve(_Drip, cert)


def serve_failing_then(
    folder: Path, cert: tuple[Path, Path], failures: int
) -> contextlib.AbstractContextManager[str]:
    return serve(_Failing, cert, folder=str(folder), failures_left=failures)
