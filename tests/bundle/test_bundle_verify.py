"""Each refusal of verify_bundle, driven with bytes, real keys and real signatures."""

from __future__ import annotations

import base64
import json

import pytest
from bundle_factory import manifest_for, signed_bundle, unsigned_bundle
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE
from agent.bundle.signing import key_id, raw_public_bytes, sign_manifest
from agent.bundle.trust import TrustConfig, TrustedKeyConfig, TrustStore
from agent.bundle.verify import sha256_hex, verify_bundle
from agent.errors import (
    BundleError,
    DigestMismatch,
    SignatureError,
    SizeLimitExceeded,
    UntrustedKey,
)
from agent.limits import Limits

LIMITS = Limits()


def test_valid_bundle_verifies(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    files = signed_bundle(publisher_key, version="1.2.3")
    verified = verify_bundle(files, trust, limits=LIMITS)
    assert verified.manifest.version == "1.2.3"
    assert verified.digest == sha256_hex(files[MANIFEST_FILE])
    assert verified.signer_keyid == key_id(publisher_key.public_key())
    assert verified.model_bytes == files[MODEL_FILE]
    assert dict(verified.files) == files


def test_unsigned_bundle_is_refused(trust: TrustStore) -> None:
    with pytest.raises(SignatureError, match="unsigned"):
        verify_bundle(unsigned_bundle(), trust, limits=LIMITS)


def test_malformed_signature_is_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    files = signed_bundle(publisher_key)
    files[SIGNATURE_FILE] = b"not json"
    with pytest.raises(SignatureError, match="not JSON"):
        verify_bundle(files, trust, limits=LIMITS)


def test_other_algorithm_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    files = signed_bundle(publisher_key)
    document = json.loads(files[SIGNATURE_FILE])
    document["algorithm"] = "none"
    files[SIGNATURE_FILE] = json.dumps(document).encode()
    with pytest.raises(SignatureError, match="ed25519"):
        verify_bundle(files, trust, limits=LIMITS)


def test_wrong_signature_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    """A signature by the trusted key id, but over other bytes (a signature lifted from
    another manifest)."""
    files = signed_bundle(publisher_key)
    other = signed_bundle(publisher_key, version="9.9.9")
    files[SIGNATURE_FILE] = other[SIGNATURE_FILE]
    with pytest.raises(SignatureError, match="does not verify") as info:
        verify_bundle(files, trust, limits=LIMITS)
    assert type(info.value) is SignatureError


def test_forged_signature_bytes_are_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    files = signed_bundle(publisher_key)
    document = json.loads(files[SIGNATURE_FILE])
    document["signature"] = base64.b64encode(bytes(64)).decode()
    files[SIGNATURE_FILE] = json.dumps(document).encode()
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(files, trust, limits=LIMITS)


def test_untrusted_key_is_refused(trust: TrustStore) -> None:
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(UntrustedKey, match="not trusted"):
        verify_bundle(signed_bundle(stranger), trust, limits=LIMITS)


def test_keyid_claim_cannot_borrow_a_trusted_key(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    """An attacker signs with their own key but names the trusted key id."""
    stranger = Ed25519PrivateKey.generate()
    files = signed_bundle(stranger)
    document = json.loads(files[SIGNATURE_FILE])
    document["keyid"] = key_id(publisher_key.public_key())
    files[SIGNATURE_FILE] = json.dumps(document).encode()
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(files, trust, limits=LIMITS)


def test_revoked_key_is_refused(publisher_key: Ed25519PrivateKey) -> None:
    public = publisher_key.public_key()
    encoded = base64.b64encode(raw_public_bytes(public)).decode()
    revoked = TrustStore(
        TrustConfig(keys=[TrustedKeyConfig(id=key_id(public), public_key=encoded, revoked=True)])
    )
    with pytest.raises(UntrustedKey, match="revoked"):
        verify_bundle(signed_bundle(publisher_key), revoked, limits=LIMITS)


def test_rotation_trusts_both_keys(publisher_key: Ed25519PrivateKey) -> None:
    new_key = Ed25519PrivateKey.generate()
    both = TrustStore.of(publisher_key.public_key(), new_key.public_key())
    assert verify_bundle(signed_bundle(publisher_key), both, limits=LIMITS).signer_keyid
    assert verify_bundle(signed_bundle(new_key), both, limits=LIMITS).signer_keyid


def test_model_changed_after_signing_is_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    files = signed_bundle(publisher_key, model=b"original module")
    files[MODEL_FILE] = b"tampered module"  # same size, other bytes
    with pytest.raises(DigestMismatch, match="SHA-256"):
        verify_bundle(files, trust, limits=LIMITS)


def test_model_resized_after_signing_is_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    files = signed_bundle(publisher_key)
    files[MODEL_FILE] += b"\x00"
    with pytest.raises(DigestMismatch, match="size"):
        verify_bundle(files, trust, limits=LIMITS)


def test_manifest_changed_after_signing_is_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    files = signed_bundle(publisher_key, version="1.0.0")
    files[MANIFEST_FILE] = files[MANIFEST_FILE].replace(b'"1.0.0"', b'"2.0.0"')
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(files, trust, limits=LIMITS)


def test_missing_file_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    files = signed_bundle(publisher_key)
    del files[MODEL_FILE]
    with pytest.raises(BundleError, match="missing"):
        verify_bundle(files, trust, limits=LIMITS)


def test_missing_manifest_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    files = signed_bundle(publisher_key)
    del files[MANIFEST_FILE]
    with pytest.raises(BundleError, match="no manifest"):
        verify_bundle(files, trust, limits=LIMITS)


def test_extra_file_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    files = signed_bundle(publisher_key)
    files["notes.txt"] = b"left over from another bundle"
    with pytest.raises(BundleError, match="does not list"):
        verify_bundle(files, trust, limits=LIMITS)


def test_files_mixed_from_two_bundles_are_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    """Both bundles are validly signed; the manifest of one with the module of the other
    is not a bundle."""
    first = signed_bundle(publisher_key, version="1.0.0")
    second = signed_bundle(publisher_key, version="1.1.0")
    mixed = {**first, MODEL_FILE: second[MODEL_FILE]}
    with pytest.raises(DigestMismatch):
        verify_bundle(mixed, trust, limits=LIMITS)


def test_manifest_listing_an_escaping_path_is_refused(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    payload = {MODEL_FILE: b"m", "../evil": b"x"}
    manifest_bytes = manifest_for("sepsis", "1.0.0", payload).canonical_bytes()
    files = {
        **payload,
        MANIFEST_FILE: manifest_bytes,
        SIGNATURE_FILE: sign_manifest(manifest_bytes, publisher_key),
    }
    with pytest.raises(BundleError, match="may not"):
        verify_bundle(files, trust, limits=LIMITS)


def test_invalid_manifest_is_refused_even_when_signed(
    publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    manifest_bytes = b'{"name": "sepsis"}'
    files = {
        MODEL_FILE: b"m",
        MANIFEST_FILE: manifest_bytes,
        SIGNATURE_FILE: sign_manifest(manifest_bytes, publisher_key),
    }
    with pytest.raises(BundleError, match="invalid") as info:
        verify_bundle(files, trust, limits=LIMITS)
    assert type(info.value) is BundleError


def test_oversize_wasm_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    files = signed_bundle(publisher_key, model=bytes(2048))
    with pytest.raises(SizeLimitExceeded, match=MODEL_FILE):
        verify_bundle(files, trust, limits=Limits(wasm_module_max=1024))


def test_oversize_manifest_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    files = signed_bundle(publisher_key)
    with pytest.raises(SizeLimitExceeded, match=MANIFEST_FILE):
        verify_bundle(files, trust, limits=Limits(manifest_max=100))


def test_oversize_signature_is_refused(publisher_key: Ed25519PrivateKey, trust: TrustStore) -> None:
    files = signed_bundle(publisher_key)
    files[SIGNATURE_FILE] = b" " * 10_000
    with pytest.raises(SizeLimitExceeded, match=SIGNATURE_FILE):
        verify_bundle(files, trust, limits=LIMITS)
