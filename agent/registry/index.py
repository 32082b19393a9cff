"""The signed registry index: what a registry offers, pinned by digest and size. No I/O.

``index.json`` lists, per model, each published version with where its bundle is, the
archive's SHA-256 and exact size (the download cap) and the SHA-256 of its manifest. It
carries a monotonically increasing ``version`` and an ``expires`` time, and is signed
(``index.json.sig``, the same detached document as a manifest signature) by a trusted
publisher key. This is TUF's targets + timestamp role folded into one document for a
single-publisher setting: the signature stops a registry or mirror from inventing or
altering entries, the version stops it from replaying an older index, ``expires`` stops
it from freezing the agent on a stale one, and the pinned size stops endless downloads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.bundle.manifest import SemVer, SemVerText, canonical_json, first_invalid_field
from agent.bundle.trust import TrustStore
from agent.bundle.verify import is_safe_name, verify_signature
from agent.errors import ExpiredMetadata, RegistryError, RollbackError, SizeLimitExceeded
from agent.limits import Limits

INDEX_FILE = "index.json"
INDEX_SIGNATURE_FILE = "index.json.sig"
INDEX_FORMAT_VERSION = 1

_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndexEntry(_Strict):
    """One published version of one model."""

    version: SemVerText
    location: str = Field(description="path relative to the registry root, or an oci:// ref")
    size: Annotated[int, Field(ge=0)] = Field(description="exact bytes of the download")
    sha256: _Sha256 = Field(description="SHA-256 of the download (the .tar.gz archive)")
    manifest_sha256: _Sha256 = Field(description="SHA-256 of the bundle's manifest.json")

    @field_validator("location")
    @classmethod
    def _inside_registry(cls, value: str) -> str:
        if not (value.startswith("oci://") or is_safe_name(value)):
            raise ValueError("location must be a relative path inside the registry")
        return value

    @property
    def semver(self) -> SemVer:
        return SemVer(self.version)


class RegistryIndex(_Strict):
    format_version: int = INDEX_FORMAT_VERSION
    version: Annotated[int, Field(ge=1)]
    expires: AwareDatetime
    models: dict[str, list[IndexEntry]] = Field(default_factory=dict)

    @field_validator("format_version")
    @classmethod
    def _format(cls, value: int) -> int:
        if value != INDEX_FORMAT_VERSION:
            raise ValueError(f"unsupported index format_version {value}")
        return value

    def latest(self, model: str) -> IndexEntry | None:
        """The highest version listed for ``model``, or None."""
        entries = self.models.get(model, [])
        return max(entries, key=lambda e: e.semver) if entries else None

    def canonical_bytes(self) -> bytes:
        """The bytes a publisher writes and signs (canonical JSON)."""
        return canonical_json(self.model_dump(mode="json"))


def parse_index(data: bytes) -> RegistryIndex:
    """Parse index bytes; RegistryError names the first bad field."""
    try:
        return RegistryIndex.model_validate_json(data)
    except ValidationError as exc:
        raise RegistryError(f"{INDEX_FILE} is invalid {first_invalid_field(exc)}") from exc


def verify_index(
    index_bytes: bytes,
    signature_document: bytes,
    trust: TrustStore,
    *,
    now: datetime,
    min_version: int,
    limits: Limits,
) -> RegistryIndex:
    """Verify a fetched index against the trust store and what this agent saw before.

    Refuses, in this order: an oversize index (SizeLimitExceeded: resource exhaustion), a
    bad signature or untrusted/revoked signer (SignatureError / UntrustedKey: a registry
    or mirror altering what is offered), an invalid document (RegistryError), a version
    below ``min_version`` (RollbackError: replay of an older signed index that still lists
    a withdrawn version), and an index past ``expires`` (ExpiredMetadata: a freeze attack
    that keeps the agent on stale metadata so it never learns of a fix).
    """
    if len(index_bytes) > limits.registry_index_max:
        raise SizeLimitExceeded(f"{INDEX_FILE} is larger than {limits.registry_index_max} bytes")
    verify_signature(index_bytes, signature_document, trust)
    index = parse_index(index_bytes)
    if index.version < min_version:
        raise RollbackError(
            f"registry index version {index.version} is older than {min_version} seen before"
        )
    if now >= index.expires:
        raise ExpiredMetadata(f"registry index expired at {index.expires.isoformat()}")
    return index
