"""Publish a signed bundle to a registry and re-sign its index.

Targets by URL scheme: ``file://`` (a folder, which can then be served as it is by any
static web server as an ``https://`` registry, copied to a USB stick, or read from a
share) and ``oci://`` (see ``agent.registry.oci``). The folder layout::

    index.json                          the signed index (see agent.registry.index)
    index.json.sig                      its detached signature
    bundles/<model>/<model>-<version>.tar.gz

Publishing bumps the index ``version`` by one and sets ``expires`` afresh. The index and
its signature are two files, each replaced atomically; an agent polling between the two
replacements sees a signature that does not match and refuses that poll, then succeeds on
the next. Refresh the expiry before it passes (``refresh_index``) or every agent will
refuse the registry as frozen.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.archive import archive_bytes, read_bundle
from agent.bundle.signing import sign_manifest
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle, sha256_hex, verify_bundle
from agent.durable import write_atomic
from agent.errors import RegistryError
from agent.limits import Limits
from agent.registry.index import (
    INDEX_FILE,
    INDEX_SIGNATURE_FILE,
    IndexEntry,
    RegistryIndex,
    parse_index,
)

DEFAULT_EXPIRY = timedelta(days=30)

# URL scheme -> "module:class" implementing PublishTarget
TARGETS: dict[str, str] = {
    "file": "agent.registry.publish:FileTarget",
    "oci": "agent.registry.oci:OciTarget",
}


class PublishTarget(Protocol):
    """Where a publisher writes bundles and the index. Constructed as ``(url, ca_file)``."""

    def current_index(self) -> RegistryIndex | None:
        """The index as published now (read, not verified: it is the publisher's own)."""
        ...

    def put_bundle(self, verified: VerifiedBundle) -> IndexEntry:
        """Store a verified bundle; return its index entry (location and pins)."""
        ...

    def put_index(self, index_bytes: bytes, signature: bytes) -> None: ...


def open_target(registry_url: str, *, ca_file: Path | None = None) -> PublishTarget:
    scheme = urlparse(registry_url).scheme
    target = TARGETS.get(scheme)
    if target is None:
        raise RegistryError(
            "publish to a file:// folder (then serve it over https or copy it) or an oci:// "
            "registry"
        )
    module_name, class_name = target.split(":")
    target_class = getattr(importlib.import_module(module_name), class_name)
    opened: PublishTarget = target_class(registry_url, ca_file)
    return opened


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


class FileTarget:
    """A registry folder: ``bundles/<model>/<model>-<version>.tar.gz`` beside the index."""

    def __init__(self, registry_url: str, ca_file: Path | None = None) -> None:
        self.folder = Path(url2pathname(urlparse(registry_url).path))

    def current_index(self) -> RegistryIndex | None:
        path = self.folder / INDEX_FILE
        return parse_index(path.read_bytes()) if path.exists() else None

    def put_bundle(self, verified: VerifiedBundle) -> IndexEntry:
        name, version = verified.manifest.name, verified.manifest.version
        archive = archive_bytes(verified.files)
        entry = IndexEntry(
            version=version,
            location=f"bundles/{name}/{name}-{version}.tar.gz",
            size=len(archive),
            sha256=sha256_hex(archive),
            manifest_sha256=verified.digest,
        )
        _write(self.folder / entry.location, archive)
        return entry

    def put_index(self, index_bytes: bytes, signature: bytes) -> None:
        _write(self.folder / INDEX_SIGNATURE_FILE, signature)
        _write(self.folder / INDEX_FILE, index_bytes)


def _signed_index(
    models: dict[str, list[IndexEntry]],
    previous: RegistryIndex | None,
    key: Ed25519PrivateKey,
    expires_in: timedelta,
    now: datetime,
) -> tuple[RegistryIndex, bytes, bytes]:
    index = RegistryIndex(
        version=(previous.version + 1) if previous else 1,
        expires=now + expires_in,
        models={name: sorted(entries, key=lambda e: e.semver) for name, entries in models.items()},
    )
    data = index.canonical_bytes()
    return index, data, sign_manifest(data, key)


def publish(
    bundle_path: Path,
    registry_url: str,
    key: Ed25519PrivateKey,
    *,
    trust: TrustStore | None = None,
    expires_in: timedelta = DEFAULT_EXPIRY,
    limits: Limits | None = None,
    now: datetime | None = None,
    ca_file: Path | None = None,
) -> IndexEntry:
    """Add a signed bundle (directory or .tar.gz) to a registry; return its entry.

    The bundle is verified first, against ``trust`` or, by default, against the index key
    itself (the usual single-publisher setup), so nothing an agent would refuse is ever
    published. Publishing the identical bundle again only re-signs the index; the same
    version with other content is refused (RegistryError): a version names one build.
    ``ca_file`` is for an ``oci://`` registry behind a private CA.
    """
    limits = limits or Limits()
    now = now or datetime.now(UTC)
    target = open_target(registry_url, ca_file=ca_file)
    verified = verify_bundle(
        read_bundle(bundle_path, limits), trust or TrustStore.of(key.public_key()), limits=limits
    )
    name, version = verified.manifest.name, verified.manifest.version
    previous = target.current_index()
    models = {n: list(e) for n, e in previous.models.items()} if previous else {}
    existing = next((e for e in models.get(name, []) if e.version == version), None)
    if existing is not None and existing.manifest_sha256 != verified.digest:
        raise RegistryError(f"{name} {version} is already published with other content")
    entry = existing if existing is not None else target.put_bundle(verified)
    models[name] = [e for e in models.get(name, []) if e.version != version] + [entry]
    _, index_bytes, signature = _signed_index(models, previous, key, expires_in, now)
    target.put_index(index_bytes, signature)
    return entry


def refresh_index(
    registry_url: str,
    key: Ed25519PrivateKey,
    *,
    expires_in: timedelta = DEFAULT_EXPIRY,
    now: datetime | None = None,
    ca_file: Path | None = None,
) -> RegistryIndex:
    """Re-sign an unchanged index with a new version and expiry (also the way to move an
    index to a rotated key)."""
    target = open_target(registry_url, ca_file=ca_file)
    previous = target.current_index()
    if previous is None:
        raise RegistryError("no index to refresh: publish a bundle first")
    models = {n: list(e) for n, e in previous.models.items()}
    index, index_bytes, signature = _signed_index(
        models, previous, key, expires_in, now or datetime.now(UTC)
    )
    target.put_index(index_bytes, signature)
    return index
