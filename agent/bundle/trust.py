"""Which publisher keys this agent trusts: the ``trust:`` config section and the TrustStore.

Several keys may be trusted at once so a publisher can rotate: add the new key, publish
with it, then mark the old one ``revoked: true`` (kept in the config so the refusal names
the reason) or remove it. Every key is declared with its key id; the id is recomputed from
the key bytes at load, so a config that pairs an id with the wrong key is an error rather
than a silent trust of something else.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, model_validator

from agent.bundle.signing import (
    key_id,
    load_public_key,
    public_key_from_base64,
    raw_public_bytes,
)
from agent.configbase import ConfigPath, Section
from agent.errors import ConfigError, UntrustedKey


class TrustedKeyConfig(Section):
    """One publisher key, given inline (``public_key``) or as a file (``public_key_file``)."""

    id: str
    """Key id: first 16 hex characters of SHA-256 over the raw public key (checked at load)."""
    public_key: str | None = None
    """The raw 32-byte Ed25519 public key, base64 (the content of a ``.pub`` file)."""
    public_key_file: ConfigPath | None = None
    """A public key file (base64 raw key or PEM); relative to the config file."""
    revoked: bool = False
    """A revoked key is known but refused: bundles and indexes it signed no longer load."""
    comment: str = ""
    """Free text for operators (who holds the key, when it was added)."""

    @model_validator(mode="after")
    def _one_source(self) -> TrustedKeyConfig:
        if (self.public_key is None) == (self.public_key_file is None):
            raise ValueError("give exactly one of public_key or public_key_file")
        return self


class TrustConfig(Section):
    """Trusted publisher keys; they sign bundle manifests and registry indexes."""

    keys: list[TrustedKeyConfig] = Field(default_factory=list)
    """The publisher keys. With none, nothing verifies and no bundle loads."""


@dataclass(frozen=True)
class _TrustedKey:
    public_key: Ed25519PublicKey
    revoked: bool


class TrustStore:
    """The keys verification may use, by key id. Built once from the config; immutable.

    Construction reads key files and checks each declared id against the key bytes;
    a mismatch, a duplicate id or an unreadable key is a ConfigError naming the key id.
    """

    def __init__(self, config: TrustConfig) -> None:
        self._keys: dict[str, _TrustedKey] = {}
        for entry in config.keys:
            if entry.public_key_file is not None:
                public = load_public_key(entry.public_key_file)
            else:
                public = public_key_from_base64(entry.public_key or "")
            if key_id(public) != entry.id:
                raise ConfigError(f"trusted key {entry.id}: id does not match the key")
            if entry.id in self._keys:
                raise ConfigError(f"trusted key {entry.id} is listed twice")
            self._keys[entry.id] = _TrustedKey(public, entry.revoked)

    @classmethod
    def of(cls, *public_keys: Ed25519PublicKey) -> TrustStore:
        """A store trusting exactly these keys (CLI ``--trust`` files, tests)."""
        return cls(
            TrustConfig(
                keys=[
                    TrustedKeyConfig(
                        id=key_id(k),
                        public_key=base64.b64encode(raw_public_bytes(k)).decode("ascii"),
                    )
                    for k in public_keys
                ]
            )
        )

    def key_for(self, keyid: str) -> Ed25519PublicKey:
        """The public key to verify a signature by ``keyid``.

        Stops: signatures by keys the operator never trusted, and by keys the operator has
        revoked (a leaked or retired publisher key). Raises UntrustedKey.
        """
        key = self._keys.get(keyid)
        if key is None:
            raise UntrustedKey(f"signing key {keyid[:16]!r} is not trusted")
        if key.revoked:
            raise UntrustedKey(f"signing key {keyid} is revoked")
        return key.public_key

    def trusts(self, keyid: str) -> bool:
        """Whether a signature by ``keyid`` verifies here today. A reload asks this of every
        served bundle: one signed by a key revoked or removed since is taken out of service."""
        key = self._keys.get(keyid)
        return key is not None and not key.revoked
