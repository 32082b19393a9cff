"""Key files and the signature document, with real keys on disk."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from bundle_factory import signed_bundle, unsigned_bundle, write_dir
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.archive import read_bundle_dir
from agent.bundle.manifest import MODEL_FILE, SIGNATURE_FILE
from agent.bundle.signing import (
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    parse_signature,
    raw_public_bytes,
    sign_bundle_dir,
    sign_manifest,
)
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.errors import ConfigError, DigestMismatch
from agent.limits import Limits


def test_generate_keypair_writes_private_0600_and_loadable_keys(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path / "keys", "publisher")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    private = load_private_key(private_path)
    public = load_public_key(public_path)
    assert raw_public_bytes(public) == raw_public_bytes(private.public_key())
    assert len(key_id(public)) == 16


def test_generate_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    generate_keypair(tmp_path, "k")
    with pytest.raises(ConfigError, match="overwrite"):
        generate_keypair(tmp_path, "k")


def test_pem_public_key_is_read(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "k.pem").write_bytes(pem)
    assert key_id(load_public_key(tmp_path / "k.pem")) == key_id(key.public_key())


def test_signature_document_shape() -> None:
    key = Ed25519PrivateKey.generate()
    document = json.loads(sign_manifest(b"payload", key))
    assert document["algorithm"] == "ed25519"
    assert document["keyid"] == key_id(key.public_key())
    assert len(parse_signature(sign_manifest(b"payload", key)).signature) == 64


def test_signature_verifies_with_openssl_semantics(tmp_path: Path) -> None:
    """The signature is plain Ed25519 over the file bytes: openssl checks it too."""
    key = Ed25519PrivateKey.generate()
    payload = b'{"a":1}'
    (tmp_path / "m.json").write_bytes(payload)
    (tmp_path / "m.sig.bin").write_bytes(parse_signature(sign_manifest(payload, key)).signature)
    (tmp_path / "pub.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    try:
        result = subprocess.run(
            [
                "openssl",
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                str(tmp_path / "pub.pem"),
                "-rawin",
                "-in",
                str(tmp_path / "m.json"),
                "-sigfile",
                str(tmp_path / "m.sig.bin"),
            ],
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("openssl not installed")
    assert result.returncode == 0, result.stderr


def test_sign_bundle_dir_then_verify(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    bundle = write_dir(unsigned_bundle(), tmp_path / "b")
    sign_bundle_dir(bundle, key)
    files = read_bundle_dir(bundle, Limits())
    assert SIGNATURE_FILE in files
    verify_bundle(files, TrustStore.of(key.public_key()), limits=Limits())


def test_sign_bundle_dir_refuses_a_tampered_directory(tmp_path: Path) -> None:
    """A publisher never signs a manifest whose files changed after the build."""
    key = Ed25519PrivateKey.generate()
    bundle = write_dir(unsigned_bundle(), tmp_path / "b")
    (bundle / MODEL_FILE).write_bytes(b"changed after build")
    with pytest.raises(DigestMismatch):
        sign_bundle_dir(bundle, key)
    assert not (bundle / SIGNATURE_FILE).exists()


def test_resigning_with_a_new_key_replaces_the_signature(tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    bundle = write_dir(signed_bundle(old), tmp_path / "b")
    sign_bundle_dir(bundle, new)
    verified = verify_bundle(
        read_bundle_dir(bundle, Limits()), TrustStore.of(new.public_key()), limits=Limits()
    )
    assert verified.signer_keyid == key_id(new.public_key())
