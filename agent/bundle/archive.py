"""Read a bundle from a directory or a ``.tar.gz`` into ``{name: bytes}``; write the archive.

Reading is where hostile *containers* are stopped (hostile *content* is ``verify``'s job):
symlinks and hard links (which could point at ``/etc/shadow`` or at another bundle),
device files, FIFOs and sparse files, names that escape the bundle (``../``, absolute
paths), duplicate names (two different bytes for one name: which one was verified?), too
many members, oversized files, and more bytes in all than a download may have (a gzip
bomb). Sizes are checked from headers before a byte is read, then enforced again while
reading, because a header or ``stat`` can lie about a file that changes underneath.
Extended headers (PAX records, GNU long names) over ``limits.archive_header_max`` are
refused by their size field before tarfile reads them into memory: a small gzip can
declare, and inflate to, a header of gigabytes.

The archive form is deterministic: members sorted by name, mtime 0, uid/gid 0, no user
names, mode 0644, gzip header mtime 0. The same bundle always gives the same archive
bytes, so the archive's SHA-256 in a registry index identifies it.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path

from agent.bundle.verify import MAX_FILES, check_total, file_limit, is_safe_name
from agent.errors import BundleError, SizeLimitExceeded
from agent.limits import Limits

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def is_archive_path(path: Path) -> bool:
    """True when ``path`` is named like a bundle archive (``.tar.gz`` or ``.tgz``)."""
    return path.name.endswith(ARCHIVE_SUFFIXES)


def read_bundle(path: Path, limits: Limits) -> dict[str, bytes]:
    """Read a bundle directory or a ``.tar.gz`` archive of one."""
    if path.is_dir():
        return read_bundle_dir(path, limits)
    if is_archive_path(path):
        return read_bundle_archive(path, limits)
    raise BundleError(f"{path} is neither a bundle directory nor a .tar.gz archive")


def read_bundle_dir(root: Path, limits: Limits) -> dict[str, bytes]:
    """Read every regular file under ``root``, keyed by its relative POSIX path.

    Refuses symlinks and special files anywhere below ``root`` (BundleError) and files
    over their size limit (SizeLimitExceeded). Each file is opened with ``O_NOFOLLOW`` and
    checked by ``fstat`` on the open descriptor, so a file swapped for a link between the
    listing and the read is refused too.
    """
    files: dict[str, bytes] = {}
    _read_dir_into(root, "", limits, files)
    return files


def _read_dir_into(directory: Path, prefix: str, limits: Limits, out: dict[str, bytes]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise BundleError(f"cannot list bundle directory {directory}") from exc
    for entry in entries:
        name = f"{prefix}{entry.name}"
        if entry.is_symlink():
            raise BundleError(f"bundle member {name!r} is a symbolic link")
        if entry.is_dir(follow_symlinks=False):
            _read_dir_into(Path(entry.path), f"{name}/", limits, out)
            continue
        if not entry.is_file(follow_symlinks=False):
            raise BundleError(f"bundle member {name!r} is not a regular file")
        if not is_safe_name(name):
            raise BundleError(f"bundle member name {name!r} is not allowed")
        if len(out) >= MAX_FILES:
            raise SizeLimitExceeded(f"bundle has more than {MAX_FILES} files")
        out[name] = _read_regular_file(Path(entry.path), name, file_limit(name, limits))
        check_total(sum(len(data) for data in out.values()), limits)


def _read_regular_file(path: Path, name: str, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise BundleError(f"cannot open bundle member {name!r} (a link?)") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"bundle member {name!r} is not a regular file")
        if info.st_size > limit:
            raise SizeLimitExceeded(f"{name} is larger than {limit} bytes")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise SizeLimitExceeded(f"{name} is larger than {limit} bytes")
    return data


def read_bundle_archive(path: Path, limits: Limits) -> dict[str, bytes]:
    """Read a ``.tar.gz`` bundle file of at most ``limits.bundle_download_max`` bytes."""
    limit = limits.bundle_download_max
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"cannot read bundle archive {path}") from exc
    if len(data) > limit:
        raise SizeLimitExceeded(f"bundle archive is larger than {limit} bytes")
    return read_bundle_archive_bytes(data, limits)


_EXTENDED_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_PLAIN_FILES = (tarfile.REGTYPE, tarfile.AREGTYPE)


def _bounded_tarinfo(header_max: int) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses an extended header over ``header_max`` bytes by its size
    field, before tarfile allocates and parses it (SizeLimitExceeded)."""

    class BoundedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in _EXTENDED_HEADERS and self.size > header_max:
                raise SizeLimitExceeded(f"archive extended header is over {header_max} bytes")
            member: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
            return member

    return BoundedTarInfo


def read_bundle_archive_bytes(data: bytes, limits: Limits) -> dict[str, bytes]:
    """Unpack an in-memory ``.tar.gz`` bundle into ``{name: bytes}`` (nothing touches disk).

    Directory entries are skipped; a leading ``./`` is dropped. Everything that is not a
    plain file or directory is refused, as are unsafe or duplicate names and oversize
    members (checked from the header before reading, so a gzip bomb stops early).
    """
    files: dict[str, bytes] = {}
    members = total = 0
    try:
        with tarfile.open(
            fileobj=io.BytesIO(data),
            mode="r:gz",
            tarinfo=_bounded_tarinfo(limits.archive_header_max),
        ) as tar:
            for member in tar:
                members += 1
                if members > 2 * MAX_FILES:
                    raise SizeLimitExceeded(f"bundle archive has more than {2 * MAX_FILES} members")
                name = member.name.removeprefix("./")
                if member.isdir():
                    continue
                if member.type not in _PLAIN_FILES or member.sparse is not None:
                    raise BundleError(f"archive member {name!r} is not a regular file")
                if not is_safe_name(name):
                    raise BundleError(f"archive member name {name!r} is not allowed")
                if name in files:
                    raise BundleError(f"archive member {name!r} appears twice")
                limit = file_limit(name, limits)
                if member.size > limit:
                    raise SizeLimitExceeded(f"{name} is larger than {limit} bytes")
                total += member.size
                check_total(total, limits)
                handle = tar.extractfile(member)
                if handle is None:  # pragma: no cover - isreg() members always have data
                    raise BundleError(f"archive member {name!r} has no data")
                files[name] = handle.read()  # exactly member.size bytes, checked above
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, RecursionError) as exc:
        # RecursionError: a chain of thousands of extended headers, each naming the next
        raise BundleError("bundle archive is not a valid .tar.gz") from exc
    return files


def archive_bytes(files: Mapping[str, bytes]) -> bytes:
    """The deterministic ``.tar.gz`` of a bundle (see the module docstring)."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(files):
            if not is_safe_name(name):
                raise BundleError(f"bundle member name {name!r} is not allowed")
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    return raw.getvalue()
