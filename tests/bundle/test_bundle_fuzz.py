"""Property tests: hostile bytes anywhere in the trust path end in a typed refusal, never in
a crash or an acceptance."""

from __future__ import annotations

import contextlib
import io
import tarfile

from bundle_factory import signed_bundle
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bundle.archive import archive_bytes, read_bundle_archive_bytes
from agent.bundle.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE
from agent.bundle.signing import parse_signature
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.errors import BundleError
from agent.limits import Limits

KEY = Ed25519PrivateKey.generate()
TRUST = TrustStore.of(KEY.public_key())
GOOD = signed_bundle(KEY, model=b"\x00asm\x01\x00\x00\x00 a small module")
LIMITS = Limits()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes_are_not_an_archive(data: bytes) -> None:
    with contextlib.suppress(BundleError):
        read_bundle_archive_bytes(data, LIMITS)


@FAST
@given(st.data())
def test_a_flipped_byte_in_the_archive_never_verifies_as_changed(data: st.DataObject) -> None:
    """Flip one byte of a good archive: either reading or verifying refuses, or (when the
    flip hit tar padding or header slack) the verified files are exactly the good ones."""
    archive = bytearray(archive_bytes(GOOD))
    position = data.draw(st.integers(0, len(archive) - 1))
    archive[position] ^= data.draw(st.integers(1, 255))
    try:
        files = read_bundle_archive_bytes(bytes(archive), LIMITS)
        verified = verify_bundle(files, TRUST, limits=LIMITS)
    except BundleError:
        return
    assert dict(verified.files) == GOOD


@FAST
@given(
    st.sampled_from([MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE]),
    st.integers(0, 10_000),
    st.integers(1, 255),
)
def test_a_flipped_byte_in_any_file_is_refused(name: str, where: int, mask: int) -> None:
    files = dict(GOOD)
    changed = bytearray(files[name])
    changed[where % len(changed)] ^= mask
    files[name] = bytes(changed)
    try:
        verify_bundle(files, TRUST, limits=LIMITS)
    except BundleError:
        return
    raise AssertionError(f"a changed {name} verified")


@FAST
@given(st.binary(max_size=512))
def test_random_signature_documents_are_refused(document: bytes) -> None:
    with contextlib.suppress(BundleError):
        parse_signature(document)


@FAST
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=5))
def test_member_names_are_refused_or_safe(names: list[str]) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    try:
        files = read_bundle_archive_bytes(raw.getvalue(), LIMITS)
    except BundleError:
        return
    for name in files:
        assert not name.startswith("/") and ".." not in name.split("/")
