"""verify_index: each refusal, with real signatures and no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.signing import sign_manifest
from agent.bundle.trust import TrustStore
from agent.errors import (
    ExpiredMetadata,
    RegistryError,
    RollbackError,
    SignatureError,
    SizeLimitExceeded,
    UntrustedKey,
)
from agent.limits import Limits
from agent.registry.index import IndexEntry, RegistryIndex, verify_index

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LIMITS = Limits()


def _index(version: int = 3, expires: datetime = NOW + timedelta(days=1)) -> bytes:
    entry = IndexEntry(
        version="1.0.0",
        location="bundles/sepsis/sepsis-1.0.0.tar.gz",
        size=10,
        sha256="a" * 64,
        manifest_sha256="b" * 64,
    )
    return RegistryIndex(
        version=version, expires=expires, models={"sepsis": [entry]}
    ).canonical_bytes()


def test_valid_index(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    data = _index()
    index = verify_index(
        data, sign_manifest(data, publisher_key), trust, now=NOW, min_version=3, limits=LIMITS
    )
    latest = index.latest("sepsis")
    assert latest is not None and latest.version == "1.0.0"
    assert index.latest("other") is None


def test_unsigned_or_forged_index_is_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    data = _index()
    signature = sign_manifest(_index(version=4), publisher_key)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_index(data, signature, trust, now=NOW, min_version=0, limits=LIMITS)
    with pytest.raises(SignatureError):
        verify_index(data, b"", trust, now=NOW, min_version=0, limits=LIMITS)


def test_index_by_untrusted_key_is_refused(trust: TrustStore) -> None:
    data = _index()
    signature = sign_manifest(data, Ed25519PrivateKey.generate())
    with pytest.raises(UntrustedKey):
        verify_index(data, signature, trust, now=NOW, min_version=0, limits=LIMITS)


def test_expired_index_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    data = _index(expires=NOW - timedelta(seconds=1))
    with pytest.raises(ExpiredMetadata, match="expired"):
        verify_index(
            data, sign_manifest(data, publisher_key), trust, now=NOW, min_version=0, limits=LIMITS
        )


def test_older_index_than_seen_is_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    data = _index(version=2)
    with pytest.raises(RollbackError, match="older"):
        verify_index(
            data, sign_manifest(data, publisher_key), trust, now=NOW, min_version=3, limits=LIMITS
        )


def test_oversize_index_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    data = _index()
    with pytest.raises(SizeLimitExceeded):
        verify_index(
            data,
            sign_manifest(data, publisher_key),
            trust,
            now=NOW,
            min_version=0,
            limits=Limits(registry_index_max=50),
        )


def test_signed_but_invalid_index_is_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    data = b'{"version": 1, "expires": "2030-01-01T00:00:00", "models": {}}'  # naive time
    with pytest.raises(RegistryError, match="expires"):
        verify_index(
            data, sign_manifest(data, publisher_key), trust, now=NOW, min_version=0, limits=LIMITS
        )


def test_entry_location_may_not_escape() -> None:
    with pytest.raises(ValueError, match="relative path"):
        IndexEntry(
            version="1.0.0",
            location="../../etc/passwd",
            size=1,
            sha256="a" * 64,
            manifest_sha256="b" * 64,
        )
