"""Ed25519 keys and detached signatures for bundle manifests and registry indexes.

A publisher key signs two kinds of documents: a bundle's ``manifest.json`` and a
registry's ``index.json``. Both get the same detached signature document::

    {"algorithm": "ed25519", "keyid": "<16 hex>", "signature": "<base64 of 64 bytes>"}

written as canonical JSON (sorted keys, no spaces). The signature is over the exact bytes of
the signed file, so anyone can check it with any Ed25519 implementation.

Key files:

* private key: PEM, PKCS#8, unencrypted, file mode 0600 (``NAME.key``);
* public key: one line, the base64 of the raw 32-byte public key (``NAME.pub``), short
  enough to paste into the agent config inline. ``load_public_key`` also reads a PEM
  SubjectPublicKeyInfo file, for keys made with ``openssl genpkey -algorithm ed25519``.

The key id is the first 16 hex characters of SHA-256 over the raw public key. It names a
key; it never stands in for one: verification always uses the trusted key bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.bundle.manifest import MANIFEST_FILE, SIGNATURE_FILE, canonical_json
from agent.durable import write_atomic
from agent.errors import ConfigError, SignatureError
from agent.limits import Limits

ALGORITHM = "ed25519"
SIGNATURE_DOCUMENT_MAX = 4096  # bytes: a signature document is ~130 bytes; refuse anything big
_SIGNATURE_LENGTH = 64  # bytes: an Ed25519 signature


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key (what the key id hashes)."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:16]


def public_key_from_base64(text: str) -> Ed25519PublicKey:
    """Parse the base64 of a raw 32-byte Ed25519 public key; ConfigError if it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise ConfigError("public key is not valid base64") from exc
    if len(raw) != 32:
        raise ConfigError("an Ed25519 public key is 32 raw bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def generate_keypair(out_dir: Path, name: str) -> tuple[Path, Path]:
    """Create ``out_dir/NAME.key`` (PEM PKCS#8, mode 0600) and ``out_dir/NAME.pub`` (base64).

    Refuses to overwrite an existing key: losing a signing key by a typo is not recoverable.
    Returns (private_path, public_path).
    """
    if not name or "/" in name or name.startswith("."):
        raise ConfigError("a key name is a plain file name")
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / f"{name}.key"
    public_path = out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"refusing to overwrite existing key file {path}")
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_text = base64.b64encode(raw_public_bytes(private_key.public_key())).decode("ascii")
    public_path.write_text(public_text + "\n", encoding="ascii")
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an unencrypted PEM (PKCS#8) Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read private key {path}: {exc.__class__.__name__}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a public key file: base64 of the raw 32 bytes, or PEM SubjectPublicKeyInfo."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read public key {path}") from exc
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ConfigError(f"{path} is not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path} is not an Ed25519 public key")
        return key
    return public_key_from_base64(data.decode("ascii", errors="replace"))


@dataclass(frozen=True)
class DetachedSignature:
    """A parsed signature document (not yet checked against any key)."""

    keyid: str
    signature: bytes


def sign_manifest(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """Sign the exact bytes of a document; return the signature document to store beside it.

    Used for ``manifest.json`` and for a registry's ``index.json`` alike.
    """
    document = {
        "algorithm": ALGORITHM,
        "keyid": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    }
    return canonical_json(document) + b"\n"


def parse_signature(document: bytes) -> DetachedSignature:
    """Parse a signature document; SignatureError if it is not one we accept.

    Stops: algorithm confusion (only ``ed25519`` is accepted, whatever the document
    claims) and oversized or malformed input reaching the JSON parser.
    """
    if len(document) > SIGNATURE_DOCUMENT_MAX:
        raise SignatureError("signature document is too large")
    try:
        parsed = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignatureError("signature document is not JSON") from exc
    if not isinstance(parsed, dict) or set(parsed) != {"algorithm", "keyid", "signature"}:
        raise SignatureError("signature document needs exactly algorithm, keyid, signature")
    if parsed["algorithm"] != ALGORITHM:
        raise SignatureError("signature algorithm must be ed25519")
    keyid, encoded = parsed["keyid"], parsed["signature"]
    if not isinstance(keyid, str) or not isinstance(encoded, str):
        raise SignatureError("signature keyid and signature must be strings")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text: not base64 either way
        raise SignatureError("signature is not valid base64") from exc
    if len(signature) != _SIGNATURE_LENGTH:
        raise SignatureError("an Ed25519 signature is 64 bytes")
    return DetachedSignature(keyid=keyid, signature=signature)


def sign_bundle_dir(bundle_dir: Path, private_key: Ed25519PrivateKey) -> Path:
    """Sign an unsigned (or re-sign a signed) bundle directory; return the signature path.

    Before signing, every file is checked against the manifest (digests, sizes, no extra or
    missing files): a signature attests the directory as it is, so a publisher never signs
    a manifest whose files were changed after the build. The signature file is written
    atomically (``agent.durable``).
    """
    # Imported here: verify and trust build on this module's key primitives.
    from agent.bundle.archive import read_bundle_dir
    from agent.bundle.verify import parse_manifest, verify_files

    files = read_bundle_dir(bundle_dir, Limits())
    if MANIFEST_FILE not in files:
        raise SignatureError(f"{bundle_dir} has no {MANIFEST_FILE}")
    manifest = parse_manifest(files[MANIFEST_FILE])
    verify_files(manifest, files)
    signature = sign_manifest(files[MANIFEST_FILE], private_key)
    target = bundle_dir / SIGNATURE_FILE
    write_atomic(target, signature)
    return target
