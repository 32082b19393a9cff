"""Bundle verification: bytes in, a verified manifest or a typed error out. No I/O here.

The chain of trust is: trusted key -> signature over the exact bytes of ``manifest.json``
-> manifest -> SHA-256 and size of every other file. Reading bundles from disk or the
network lives in ``archive``, ``agent.store`` and ``agent.registry``; they all end here, at
pull and again at every load, so a bundle is never used on the strength of an earlier check.

The order matters: sizes are checked before anything is parsed or hashed, and the signature
is checked before the manifest JSON is parsed, so untrusted bytes reach as little code as
possible.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from pydantic import ValidationError

from agent.bundle.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    SIGNATURE_FILE,
    BundleManifest,
    first_invalid_field,
)
from agent.bundle.signing import SIGNATURE_DOCUMENT_MAX, parse_signature
from agent.bundle.trust import TrustStore
from agent.errors import BundleError, DigestMismatch, SignatureError, SizeLimitExceeded
from agent.limits import Limits

MAX_FILES = 64  # files in one bundle: model.wasm, manifest, signature and a few extras


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, signer and files all checked out.

    ``files`` holds every file of the bundle (including ``manifest.json`` and
    ``manifest.sig``) exactly as verified; ``digest`` is the SHA-256 hex of
    ``manifest.json``, the bundle's identity in predictions, audit and metrics.
    """

    manifest: BundleManifest
    manifest_bytes: bytes
    digest: str
    signer_keyid: str
    files: Mapping[str, bytes]

    @property
    def model_bytes(self) -> bytes:
        """The verified ``model.wasm``."""
        return self.files[MODEL_FILE]


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256, the digest form used in manifests, indexes and predictions."""
    return hashlib.sha256(data).hexdigest()


def is_safe_name(name: str) -> bool:
    """True for a plain relative POSIX path inside the bundle (``a.bin``, ``extra/b.json``).

    Stops path traversal: a name with ``..``, an absolute path, a backslash, an empty
    segment or a NUL could make the store write outside the version directory.
    """
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        return False
    parts = name.split("/")
    return all(p not in ("", ".", "..") for p in parts) and posixpath.normpath(name) == name


def file_limit(name: str, limits: Limits) -> int:
    """Largest size in bytes allowed for a bundle file of this name."""
    if name == MANIFEST_FILE:
        return limits.manifest_max
    if name == MODEL_FILE:
        return limits.wasm_module_max
    if name == SIGNATURE_FILE:
        return SIGNATURE_DOCUMENT_MAX
    return limits.bundle_download_max


def check_sizes(files: Mapping[str, bytes], limits: Limits) -> None:
    """Refuse a bundle with too many files, any file over its limit, or more than
    ``limits.bundle_download_max`` bytes in all (SizeLimitExceeded).

    Stops resource exhaustion: an oversized manifest or module is refused before it is
    parsed, hashed, compiled or written to disk.
    """
    if len(files) > MAX_FILES:
        raise SizeLimitExceeded(f"bundle has more than {MAX_FILES} files")
    for name, data in files.items():
        limit = file_limit(name, limits)
        if len(data) > limit:
            raise SizeLimitExceeded(f"{name} is larger than {limit} bytes")
    check_total(sum(len(data) for data in files.values()), limits)


def check_total(total: int, limits: Limits) -> None:
    """Refuse a bundle whose files add up to more than ``limits.bundle_download_max``
    bytes: a small compressed archive must not unpack into gigabytes (a gzip bomb)."""
    if total > limits.bundle_download_max:
        raise SizeLimitExceeded(f"bundle is larger than {limits.bundle_download_max} bytes")


def verify_signature(payload: bytes, signature_document: bytes, trust: TrustStore) -> str:
    """Check a detached signature over ``payload``; return the signer's key id.

    Stops: forged or corrupted documents (SignatureError), and documents signed by a key
    that is unknown or revoked (UntrustedKey). The key comes from the trust store by id;
    the signature document never supplies key material.
    """
    detached = parse_signature(signature_document)
    public_key = trust.key_for(detached.keyid)
    try:
        public_key.verify(detached.signature, payload)
    except InvalidSignature as exc:
        raise SignatureError(f"signature by key {detached.keyid} does not verify") from exc
    return detached.keyid


def parse_manifest(data: bytes) -> BundleManifest:
    """Parse and validate manifest bytes (BundleError names the first bad field)."""
    try:
        return BundleManifest.model_validate_json(data)
    except ValidationError as exc:
        raise BundleError(f"{MANIFEST_FILE} is invalid {first_invalid_field(exc)}") from exc


def verify_files(manifest: BundleManifest, files: Mapping[str, bytes]) -> None:
    """Check that ``files`` is exactly the set the manifest lists, byte for byte.

    Stops: a file swapped or altered after signing (DigestMismatch on size or SHA-256),
    a listed file missing (BundleError), and an extra file the manifest does not list,
    such as one left from another bundle (BundleError): a bundle is all of one build.
    ``manifest.json`` and ``manifest.sig`` are the only files outside the list.
    """
    for name in manifest.files:
        if name in (MANIFEST_FILE, SIGNATURE_FILE) or not is_safe_name(name):
            raise BundleError(f"manifest lists a file it may not: {name!r}")
    for name, entry in manifest.files.items():
        data = files.get(name)
        if data is None:
            raise BundleError(f"bundle file {name} is missing")
        if len(data) != entry.size:
            raise DigestMismatch(f"{name}: size differs from the signed manifest")
        if sha256_hex(data) != entry.sha256:
            raise DigestMismatch(f"{name}: SHA-256 differs from the signed manifest")
    extra = sorted(set(files) - set(manifest.files) - {MANIFEST_FILE, SIGNATURE_FILE})
    if extra:
        raise BundleError(f"bundle holds files the manifest does not list: {extra[:5]}")


def verify_bundle(
    files: Mapping[str, bytes], trust: TrustStore, *, limits: Limits
) -> VerifiedBundle:
    """Verify a whole bundle given as ``{relative name: bytes}``.

    Refuses, in this order: oversize files (SizeLimitExceeded), no manifest (BundleError),
    no signature: an unsigned bundle (SignatureError), a bad signature or an untrusted or
    revoked signer (SignatureError / UntrustedKey), an invalid manifest (BundleError), then
    any file that is altered, missing or extra (see ``verify_files``).
    """
    check_sizes(files, limits)
    manifest_bytes = files.get(MANIFEST_FILE)
    if manifest_bytes is None:
        raise BundleError(f"bundle has no {MANIFEST_FILE}")
    signature_document = files.get(SIGNATURE_FILE)
    if signature_document is None:
        raise SignatureError(f"bundle is unsigned: no {SIGNATURE_FILE}")
    signer = verify_signature(manifest_bytes, signature_document, trust)
    manifest = parse_manifest(manifest_bytes)
    verify_files(manifest, files)
    return VerifiedBundle(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        digest=sha256_hex(manifest_bytes),
        signer_keyid=signer,
        files=MappingProxyType(dict(files)),
    )
