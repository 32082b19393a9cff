"""Opening a batch input file once, safely, and reading exactly what was settled.

A drop-folder inbox is writable by the sender, so between the agent's scan and its open the
name may come to point elsewhere: a symlink to a FIFO (an ``open`` that never returns), to
a file only the agent's user may read (its records would be published to the outbox), a
hard link to such a file, or the same file still growing. The rules here stop each:

- the path is opened once, with ``O_NOFOLLOW`` (a symlink fails) and ``O_NONBLOCK`` (a FIFO
  or device opens at once instead of waiting for a writer), and every later check and read
  uses that descriptor, never the path again;
- ``fstat`` of the descriptor must show a regular file, the inode and device the scan saw,
  and the owner and mode the ``InputPolicy`` allows (one link, not writable by others, an
  allowed owner);
- the reader gets a stream bounded to the size at open: a file that ends earlier (truncated,
  a short read from a share) is an error, and one that changed while read is an error
  (``verify_unchanged``), never a success with half the records.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.batch.items import UnreadableFile

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


@dataclass(frozen=True)
class FileIdentity:
    """Which file, and which state of it: a scan's ``lstat`` or an open file's ``fstat``."""

    device: int
    inode: int
    size: int  # bytes
    mtime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileIdentity:
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)

    def same_file(self, other: FileIdentity) -> bool:
        return (self.device, self.inode) == (other.device, other.inode)


@dataclass(frozen=True)
class InputPolicy:
    """Which regular files may be read. The default (``edge-agent score``, whose user names
    the file) takes any; the drop folder takes only a file its sender plainly wrote."""

    single_link: bool = False  # refuse a file with other hard links (its data lives elsewhere)
    refuse_world_writable: bool = False  # anyone could change it while it is scored
    owners: frozenset[int] = frozenset()  # user ids allowed to own it; empty: any

    def check(self, status: os.stat_result) -> None:
        """``UnreadableFile("not_allowed")`` when ``status`` breaks the policy."""
        if self.single_link and status.st_nlink != 1:
            raise UnreadableFile("not_allowed", "the file has other hard links")
        if self.refuse_world_writable and status.st_mode & stat.S_IWOTH:
            raise UnreadableFile("not_allowed", "the file is writable by any user")
        if self.owners and status.st_uid not in self.owners:
            raise UnreadableFile("not_allowed", "the file's owner is not an allowed sender")


class SettledInput(io.BufferedReader):
    """A binary stream over an opened input, ending at the size it had when opened."""

    def __init__(self, raw: _BoundedFile) -> None:
        super().__init__(raw, 1 << 16)
        self.identity = raw.identity

    def verify_unchanged(self) -> None:
        """``UnreadableFile("changed_while_read")`` when the file's size or mtime is no
        longer what it was at open: its writer was still at work, so what was read may be
        a part of it."""
        if FileIdentity.of(os.fstat(self.fileno())) != self.identity:
            raise UnreadableFile(
                "changed_while_read", "the file changed while it was read; send it again"
            )


class _BoundedFile(io.RawIOBase):
    """Reads the descriptor up to ``identity.size`` bytes; EOF before that is an error."""

    def __init__(self, descriptor: int, identity: FileIdentity) -> None:
        super().__init__()
        self._fd = descriptor
        self.identity = identity
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._position = os.lseek(self._fd, offset, whence)
        return self._position

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self.identity.size - self._position)
        if wanted <= 0:
            return 0
        data = os.read(self._fd, wanted)
        if not data:
            raise UnreadableFile("short_read", "the file ended before the size it had when opened")
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def open_input(
    path: Path, policy: InputPolicy, expected: FileIdentity | None = None
) -> SettledInput:
    """Open ``path`` once for reading (see the module docstring). ``expected`` is what a scan
    saw: the file must be that inode, unchanged. Raises ``UnreadableFile`` (``not_regular``,
    ``not_the_scanned_file``, ``changed_while_read``, ``not_allowed``) for a file that must
    not be read, ``OSError`` for a file that cannot be (gone, no permission)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableFile("not_regular", "the file is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a socket or a FIFO without reader semantics
            raise UnreadableFile("not_regular", "the file is not a regular file") from None
        raise
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise UnreadableFile("not_regular", "the file is not a regular file")
        identity = FileIdentity.of(status)
        if expected is not None and not expected.same_file(identity):
            raise UnreadableFile("not_the_scanned_file", "the file was replaced after the scan")
        if expected is not None and expected != identity:
            raise UnreadableFile(
                "changed_while_read", "the file changed after it had settled; send it again"
            )
        policy.check(status)
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return SettledInput(_BoundedFile(descriptor, identity))
    except BaseException:
        os.close(descriptor)
        raise
