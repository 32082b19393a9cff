"""Durable file operations: atomic writes, durable moves, fsync'd folders. A leaf module.

Everything the agent writes that must survive a crash (the store's pointers, bundles and
signatures, registry indexes, drop-folder results and journals, the MLLP result spool)
goes through here. It rests on three POSIX facts used here and nowhere else:
``os.replace`` within one folder is atomic, an ``fsync`` of a file makes its bytes durable,
and an ``fsync`` of the folder makes a rename in it durable. A reader of a published path
therefore sees either nothing or the whole file, even after a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path) -> None:
    """Make renames and creations inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(target: Path) -> Path:
    """The temp file beside ``target``: hidden (leading dot), so folder watchers that skip
    dot files never see a half-written output. Deterministic, so a crashed attempt's leftover
    is simply overwritten by the retry."""
    return target.with_name(f".{target.name}.partial")


@contextlib.contextmanager
def atomic_output(target: Path, mode: int = 0o644, exact: bool = False) -> Iterator[BinaryIO]:
    """Write ``target`` all or nothing: temp file in the same folder (created afresh with
    ``mode``, less the umask; ``exact``: ``mode`` itself, whatever the umask), flush,
    fsync, ``os.replace``, fsync the folder. On an exception the temp file is removed and
    ``target`` is left as it was."""
    temp = temp_name(target)
    try:
        temp.unlink(missing_ok=True)  # a crashed attempt's leftover keeps its old mode
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(descriptor, "wb") as stream:
            if exact:
                os.fchmod(descriptor, mode)
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    fsync_dir(target.parent)


def write_atomic(target: Path, data: bytes, mode: int = 0o644, exact: bool = False) -> None:
    """``data`` as the whole new content of ``target``, all or nothing (``atomic_output``)."""
    with atomic_output(target, mode, exact) as stream:
        stream.write(data)


def move_durably(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` (replacing it) so that after a crash exactly one of
    them holds the whole file, never neither. A rename when both are on one filesystem;
    across filesystems an atomic copy into the target folder, then the source is removed;
    the copy opens ``source`` without following a symlink or waiting on a FIFO, and refuses
    anything but a regular file (``OSError``), since a sender may have put it there."""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        renamed = False
    else:
        renamed = True
    if renamed:
        fsync_dir(target.parent)
    else:
        _copy_regular(source, target)
        source.unlink()
    fsync_dir(source.parent)


def _copy_regular(source: Path, target: Path) -> None:
    """Copy the regular file ``source`` atomically to ``target``, keeping its mode."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with open(os.open(source, flags), "rb") as original:
        status = os.fstat(original.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(source))
        with atomic_output(target, stat.S_IMODE(status.st_mode)) as copy:
            shutil.copyfileobj(original, copy, 1024 * 1024)


def truncate_to(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (creating it empty if missing) and make it durable:
    the resume step that drops output written after the last checkpoint."""
    with open(path, "ab") as stream:
        if stream.seek(0, os.SEEK_END) < size:
            raise OSError(errno.EIO, "output part file is shorter than its checkpoint", str(path))
        stream.truncate(size)
        stream.flush()
        os.fsync(stream.fileno())
