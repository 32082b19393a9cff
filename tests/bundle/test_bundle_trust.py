"""The trust config section and the TrustStore built from it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from agent.bundle.signing import generate_keypair, key_id, load_public_key, raw_public_bytes
from agent.bundle.trust import TrustConfig, TrustStore
from agent.errors import ConfigError, UntrustedKey


def _b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(raw_public_bytes(key.public_key())).decode()


def test_inline_and_file_keys_with_a_revoked_one(tmp_path: Path) -> None:
    inline, revoked = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    _, public_path = generate_keypair(tmp_path / "keys", "from-file")
    file_id = key_id(load_public_key(public_path))
    config = TrustConfig.model_validate(
        {
            "keys": [
                {"id": key_id(inline.public_key()), "public_key": _b64(inline)},
                {"id": file_id, "public_key_file": "keys/from-file.pub"},
                {"id": key_id(revoked.public_key()), "public_key": _b64(revoked), "revoked": True},
            ]
        },
        context={"base_dir": tmp_path},
    )
    store = TrustStore(config)
    assert store.trusts(key_id(inline.public_key())) and store.trusts(file_id)
    with pytest.raises(UntrustedKey, match="revoked"):
        store.key_for(key_id(revoked.public_key()))
    with pytest.raises(UntrustedKey, match="not trusted"):
        store.key_for("0123456789abcdef")


def test_declared_id_must_match_the_key() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    config = TrustConfig.model_validate(
        {"keys": [{"id": key_id(other.public_key()), "public_key": _b64(key)}]}
    )
    with pytest.raises(ConfigError, match="does not match"):
        TrustStore(config)


def test_a_key_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        TrustConfig.model_validate({"keys": [{"id": "x"}]})


def test_unknown_config_key_is_an_error() -> None:
    with pytest.raises(ValidationError, match="trusted"):
        TrustConfig.model_validate({"keys": [], "trusted": True})


def test_bad_inline_key_is_a_config_error() -> None:
    config = TrustConfig.model_validate({"keys": [{"id": "x", "public_key": "bm90IGEga2V5"}]})
    with pytest.raises(ConfigError, match="32 raw bytes"):
        TrustStore(config)
