"""Publish a signed bundle to a ``file://`` registry folder and re-sign its index.

The folder can then be served as it is by any static web server (an ``https://``
registry), copied to a USB stick, or read from a share. Layout::

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

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.archive import archive_bytes, read_bundle
from agent.bundle.signing import sign_manifest
from agent.bundle.trust import TrustStore
from agent.bundle.verify import sha256_hex, verify_bundle
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


def registry_folder(registry_url: str) -> Path:
    """The folder behind a ``file://`` registry URL (the only kind one publishes to)."""
    parsed = urlparse(registry_url)
    if parsed.scheme != "file":
        raise RegistryError(
            "publish to a file:// registry folder; serve that folder over https or copy it"
        )
    return Path(url2pathname(parsed.path))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _current_index(folder: Path) -> RegistryIndex | None:
    path = folder / INDEX_FILE
    return parse_index(path.read_bytes()) if path.exists() else None


def _write_index(
    folder: Path,
    models: dict[str, list[IndexEntry]],
    previous: RegistryIndex | None,
    key: Ed25519PrivateKey,
    expires_in: timedelta,
    now: datetime,
) -> RegistryIndex:
    index = RegistryIndex(
        version=(previous.version + 1) if previous else 1,
        expires=now + expires_in,
        models={name: sorted(entries, key=lambda e: e.semver) for name, entries in models.items()},
    )
    data = index.canonical_bytes()
    _write(folder / INDEX_SIGNATURE_FILE, sign_manifest(data, key))
    _write(folder / INDEX_FILE, data)
    return index


def publish(
    bundle_path: Path,
    registry_url: str,
    key: Ed25519PrivateKey,
    *,
    trust: TrustStore | None = None,
    expires_in: timedelta = DEFAULT_EXPIRY,
    limits: Limits | None = None,
    now: datetime | None = None,
) -> IndexEntry:
    """Add a signed bundle (directory or .tar.gz) to a file registry; return its entry.

    The bundle is verified first, against ``trust`` or, by default, against the index key
    itself (the usual single-publisher setup), so nothing an agent would refuse is ever
    published. Publishing the identical bundle again only re-signs the index; the same
    version with other content is refused (RegistryError): a version names one build.
    """
    limits = limits or Limits()
    now = now or datetime.now(UTC)
    folder = registry_folder(registry_url)
    verified = verify_bundle(
        read_bundle(bundle_path, limits), trust or TrustStore.of(key.public_key()), limits=limits
    )
    name, version = verified.manifest.name, verified.manifest.version
    previous = _current_index(folder)
    models = {n: list(e) for n, e in previous.models.items()} if previous else {}
    existing = next((e for e in models.get(name, []) if e.version == version), None)
    if existing is not None and existing.manifest_sha256 != verified.digest:
        raise RegistryError(f"{name} {version} is already published with other content")
    archive = archive_bytes(verified.files)
    entry = IndexEntry(
        version=version,
        location=f"bundles/{name}/{name}-{version}.tar.gz",
        size=len(archive),
        sha256=sha256_hex(archive),
        manifest_sha256=verified.digest,
    )
    _write(folder / entry.location, archive)
    models[name] = [e for e in models.get(name, []) if e.version != version] + [entry]
    _write_index(folder, models, previous, key, expires_in, now)
    return entry


def refresh_index(
    registry_url: str,
    key: Ed25519PrivateKey,
    *,
    expires_in: timedelta = DEFAULT_EXPIRY,
    now: datetime | None = None,
) -> RegistryIndex:
    """Re-sign an unchanged index with a new version and expiry (also the way to move an
    index to a rotated key)."""
    folder = registry_folder(registry_url)
    previous = _current_index(folder)
    if previous is None:
        raise RegistryError("no index to refresh: publish a bundle first")
    models = {n: list(e) for n, e in previous.models.items()}
    return _write_index(folder, models, previous, key, expires_in, now or datetime.now(UTC))
