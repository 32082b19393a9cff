"""Registry sources, chosen by URL scheme from a table and imported lazily.

A source fetches one file of a registry by its location with a hard byte cap. Sources are
dumb transports: everything they return is checked by ``index.verify_index`` and
``agent.bundle.verify``; a source never decides what is trusted.

``file`` costs nothing to import; ``https`` loads httpx only when an https registry is
configured; ``oci`` loads ``oras`` only when an OCI registry is.
"""

from __future__ import annotations

import importlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar
from urllib.parse import urlparse

from agent.bundle.archive import read_bundle_archive_bytes
from agent.bundle.verify import sha256_hex
from agent.errors import DigestMismatch, RegistryError, SizeLimitExceeded
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.index import IndexEntry

log = logging.getLogger(__name__)

T = TypeVar("T")

# URL scheme -> "module:class" implementing RegistrySource
SOURCES: dict[str, str] = {
    "file": "agent.registry.file_source:FileSource",
    "https": "agent.registry.https_source:HttpsSource",
    "oci": "agent.registry.oci:OciSource",
}


class TransportFailure(RegistryError):
    """A failure worth retrying: connection refused or reset, timeout, HTTP 5xx, an I/O
    error on a share. Not a refusal: nothing wrong was received."""


def read_capped(
    chunks: Iterable[bytes],
    announced: str | None,
    *,
    what: str,
    max_bytes: int,
    deadline: float,
    too_slow: str,
) -> bytes:
    """A download's body, refused past ``max_bytes`` (announced by Content-Length, or
    actually sent: an endless stream) or once ``time.monotonic()`` passes ``deadline`` (a
    server dripping bytes). Every network source reads through here."""
    if announced is not None and announced.isdigit() and int(announced) > max_bytes:
        raise SizeLimitExceeded(f"{what} is announced larger than {max_bytes} bytes")
    parts: list[bytes] = []
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise SizeLimitExceeded(f"{what} is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise TransportFailure(too_slow)
        parts.append(chunk)
    return b"".join(parts)


class RegistrySource(Protocol):
    """One configured registry."""

    config: RegistryConfig

    def fetch(self, location: str, max_bytes: int) -> bytes:
        """The file at ``location`` (relative to the registry root).

        Raises SizeLimitExceeded as soon as more than ``max_bytes`` arrive (or are
        announced), TransportFailure for what a retry may fix, RegistryError otherwise.
        """
        ...

    def fetch_bundle(self, entry: IndexEntry, limits: Limits) -> dict[str, bytes]:
        """The files of the bundle ``entry`` names, checked against the entry's pins
        (exact size and SHA-256) but not yet verified as a bundle. Downloads at most
        ``entry.size`` bytes in all."""
        ...

    def close(self) -> None: ...


def fetch_archive_bundle(
    source: RegistrySource, entry: IndexEntry, limits: Limits
) -> dict[str, bytes]:
    """``fetch_bundle`` for registries that hold bundles as ``.tar.gz`` files (file,
    https): download the archive under the cap the index states, check its size and
    SHA-256 against the index (DigestMismatch), and unpack it in memory."""
    data = source.fetch(entry.location, entry.size)
    if len(data) != entry.size or sha256_hex(data) != entry.sha256:
        raise DigestMismatch(f"{entry.location}: archive differs from the index")
    return read_bundle_archive_bytes(data, limits)


def open_source(config: RegistryConfig) -> RegistrySource:
    """Instantiate the source for ``config.url``'s scheme."""
    scheme = urlparse(config.url).scheme
    target = SOURCES.get(scheme)
    if target is None:
        raise RegistryError(f"registry {config.name}: no source for scheme {scheme!r}")
    module_name, class_name = target.split(":")
    source_class = getattr(importlib.import_module(module_name), class_name)
    source: RegistrySource = source_class(config)
    return source


def with_retries(
    action: Callable[[], T],
    *,
    retries: int,
    delay: float,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Run ``action``; on TransportFailure try again up to ``retries`` more times, waiting
    ``delay``, ``2*delay``, ``4*delay``... (each with up to 10% jitter, so a fleet of agents
    does not retry in lockstep). Every other error propagates at once: a refusal is final.
    """
    attempt = 0
    while True:
        try:
            return action()
        except TransportFailure as exc:
            if attempt >= retries:
                raise
            wait = delay * (2**attempt) * (1 + random.random() / 10)
            attempt += 1
            log.warning(
                "registry transport error, retrying",
                extra={"error": exc.reason, "attempt": attempt, "wait_seconds": round(wait, 2)},
            )
            sleep(wait)
