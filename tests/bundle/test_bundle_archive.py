"""Reading bundles from directories and .tar.gz archives; hostile containers refused."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
from bundle_factory import signed_bundle, write_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.archive import (
    archive_bytes,
    read_bundle,
    read_bundle_archive_bytes,
    read_bundle_dir,
)
from agent.bundle.manifest import MODEL_FILE
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.errors import BundleError, SizeLimitExceeded
from agent.limits import Limits

LIMITS = Limits()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def test_directory_and_archive_round_trip(
    tmp_path: Path, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    files = signed_bundle(publisher_key)
    directory = write_dir(files, tmp_path / "bundle")
    assert read_bundle(directory, LIMITS) == files
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(archive_bytes(files))
    assert read_bundle(archive, LIMITS) == files
    verify_bundle(read_bundle(archive, LIMITS), trust, limits=LIMITS)


def test_archive_is_deterministic(publisher_key: Ed25519PrivateKey) -> None:
    files = signed_bundle(publisher_key)
    assert archive_bytes(files) == archive_bytes(dict(reversed(list(files.items()))))


def test_dot_slash_prefix_and_directory_entries_are_accepted() -> None:
    directory = tarfile.TarInfo("./")
    directory.type = tarfile.DIRTYPE
    data = _tar([(directory, None), _file("./model.wasm", b"m")])
    assert read_bundle_archive_bytes(data, LIMITS) == {"model.wasm": b"m"}


def test_symlink_in_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "bundle"
    directory.mkdir()
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "secret", directory / MODEL_FILE)
    with pytest.raises(BundleError, match="symbolic link"):
        read_bundle_dir(directory, LIMITS)


def test_fifo_in_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "bundle"
    directory.mkdir()
    os.mkfifo(directory / "pipe")
    with pytest.raises(BundleError, match="not a regular file"):
        read_bundle_dir(directory, LIMITS)


def test_oversize_file_in_directory_is_refused(tmp_path: Path) -> None:
    directory = write_dir({MODEL_FILE: bytes(2000)}, tmp_path / "bundle")
    with pytest.raises(SizeLimitExceeded, match=MODEL_FILE):
        read_bundle_dir(directory, Limits(wasm_module_max=1000))


def test_symlink_member_is_refused() -> None:
    link = tarfile.TarInfo(MODEL_FILE)
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(BundleError, match="not a regular file"):
        read_bundle_archive_bytes(_tar([(link, None)]), LIMITS)


def test_hardlink_member_is_refused() -> None:
    link = tarfile.TarInfo("copy.wasm")
    link.type = tarfile.LNKTYPE
    link.linkname = MODEL_FILE
    with pytest.raises(BundleError, match="not a regular file"):
        read_bundle_archive_bytes(_tar([_file(MODEL_FILE, b"m"), (link, None)]), LIMITS)


def test_device_member_is_refused() -> None:
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    with pytest.raises(BundleError, match="not a regular file"):
        read_bundle_archive_bytes(_tar([(device, None)]), LIMITS)


@pytest.mark.parametrize("name", ["../model.wasm", "/etc/model.wasm", "a/../../b", "a//b"])
def test_escaping_member_name_is_refused(name: str) -> None:
    with pytest.raises(BundleError, match="not allowed"):
        read_bundle_archive_bytes(_tar([_file(name, b"x")]), LIMITS)


def test_duplicate_member_is_refused() -> None:
    data = _tar([_file(MODEL_FILE, b"first"), _file(MODEL_FILE, b"second")])
    with pytest.raises(BundleError, match="twice"):
        read_bundle_archive_bytes(data, LIMITS)


def test_oversize_member_is_refused_from_its_header() -> None:
    data = _tar([_file(MODEL_FILE, bytes(5000))])
    with pytest.raises(SizeLimitExceeded, match=MODEL_FILE):
        read_bundle_archive_bytes(data, Limits(wasm_module_max=4096))


def test_too_many_members_are_refused() -> None:
    data = _tar([_file(f"f{i}", b"") for i in range(200)])
    with pytest.raises(SizeLimitExceeded, match="members"):
        read_bundle_archive_bytes(data, LIMITS)


def test_garbage_is_not_an_archive() -> None:
    with pytest.raises(BundleError, match="not a valid"):
        read_bundle_archive_bytes(b"\x1f\x8b garbage", LIMITS)


def test_oversize_archive_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.tar.gz"
    path.write_bytes(bytes(3000))
    with pytest.raises(SizeLimitExceeded, match="archive"):
        read_bundle(path, Limits(bundle_download_max=2000))


def test_archive_unpacking_to_more_than_the_download_cap_is_refused() -> None:
    """A gzip bomb: each member is within its own limit, the sum is not."""
    data = _tar([_file(f"part{i}.bin", bytes(400)) for i in range(4)])
    assert len(data) < 1000
    with pytest.raises(SizeLimitExceeded, match="bundle is larger"):
        read_bundle_archive_bytes(data, Limits(bundle_download_max=1000))


def test_directory_larger_in_total_than_the_cap_is_refused(tmp_path: Path) -> None:
    directory = write_dir({f"part{i}.bin": bytes(400) for i in range(4)}, tmp_path / "b")
    with pytest.raises(SizeLimitExceeded, match="bundle is larger"):
        read_bundle_dir(directory, Limits(bundle_download_max=1000))


def _inflating_pax_archive(size: int, kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A .tar.gz whose first header is an extended header (PAX, or GNU long name) of
    ``size`` bytes, all present (one record, then zeros): about size/1000 on the wire."""
    header = tarfile.TarInfo("PaxHeader")
    header.type = kind
    header.size = size
    record = b"30 comment=aaaaaaaaaaaaaaaaaa\n"
    member = tarfile.TarInfo(MODEL_FILE)
    member.size = 1
    raw = (
        header.tobuf(tarfile.USTAR_FORMAT)
        + record
        + bytes(size - len(record) + (-size % 512))
        + member.tobuf(tarfile.USTAR_FORMAT)
        + b"x".ljust(512, b"\0")
        + bytes(1024)
    )
    return gzip.compress(raw, 9)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME])
def test_an_oversized_extended_header_is_refused_by_its_size_field(kind: bytes) -> None:
    with pytest.raises(SizeLimitExceeded, match="extended header"):
        read_bundle_archive_bytes(
            _inflating_pax_archive(LIMITS.archive_header_max + 1, kind), LIMITS
        )


def test_a_small_pax_header_is_still_read() -> None:
    info = tarfile.TarInfo(MODEL_FILE)
    info.pax_headers = {"comment": "a" * 1000}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert read_bundle_archive_bytes(raw.getvalue(), LIMITS) == {MODEL_FILE: b"x"}


def test_a_sparse_member_is_refused() -> None:
    info = tarfile.TarInfo(MODEL_FILE)
    info.type = tarfile.GNUTYPE_SPARSE
    with pytest.raises(BundleError):
        read_bundle_archive_bytes(_tar([(info, b"x" * 10)]), LIMITS)


def test_a_chain_of_extended_headers_is_refused_not_a_crash() -> None:
    """Each PAX header is read by recursing into the next: thousands in a row would
    overflow the stack (RecursionError) unless refused as a bad archive."""
    header = tarfile.TarInfo("PaxHeader")
    header.type = tarfile.XHDTYPE
    record = b"30 comment=aaaaaaaaaaaaaaaaaa\n"
    header.size = len(record)
    one = header.tobuf(tarfile.USTAR_FORMAT) + record.ljust(512, b"\0")
    member = tarfile.TarInfo(MODEL_FILE)
    member.size = 1
    raw = one * 5000 + member.tobuf(tarfile.USTAR_FORMAT) + b"x".ljust(512, b"\0") + bytes(1024)
    with pytest.raises(BundleError):
        read_bundle_archive_bytes(gzip.compress(raw), LIMITS)
