"""``file://`` registries: a folder on a share, a mounted USB stick, a local directory.

The air-gapped path: an operator copies a published registry folder (index, signature,
bundles) onto a stick; the agent checks it exactly as it would a web server's answer.

A share can hang (an NFS server gone, a stale CIFS mount) and a folder can hold what is
not a file. So each read has the registry's ``timeout``, as an https download does: the
open and read run on a daemon thread the caller stops waiting for. Files open with
``O_NONBLOCK`` (opening a FIFO does not wait for a writer) and anything but a regular
file (a FIFO, a device, a socket) is refused from the opened descriptor, so a swap
between a check and the open cannot slip one in. While one read of a registry is still
stuck, the next fails at once instead of stacking up threads.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from agent.bundle.verify import is_safe_name
from agent.deadline import call_with_deadline
from agent.errors import RegistryError, SizeLimitExceeded
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.index import IndexEntry
from agent.registry.sources import TransportFailure, fetch_archive_bundle

_READ_CHUNK = 1 << 20  # bytes per read call


class FileSource:
    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self.root = Path(url2pathname(urlparse(config.url).path))
        self._busy = threading.Semaphore(1)  # one read at a time; held while one hangs

    def fetch(self, location: str, max_bytes: int) -> bytes:
        """Read at most ``max_bytes`` within ``config.timeout`` seconds (one more byte
        proves the file is too big, so a file that keeps growing cannot exhaust memory)."""
        if not is_safe_name(location):
            raise RegistryError("registry location escapes the registry folder")
        if not self._busy.acquire(blocking=False):
            raise TransportFailure(f"registry {self.config.name}: an earlier read still hangs")

        def read() -> bytes:
            try:
                return self._read(location, max_bytes)
            finally:
                self._busy.release()

        try:
            data = call_with_deadline(
                read, self.config.timeout, name=f"edge-agent-read-{self.config.name}"
            )
        except TimeoutError as exc:
            raise TransportFailure(
                f"registry {self.config.name}: {location} not read within {self.config.timeout:g} s"
            ) from exc
        if len(data) > max_bytes:
            raise SizeLimitExceeded(f"{location} is larger than {max_bytes} bytes")
        return data

    def _read(self, location: str, max_bytes: int) -> bytes:
        path = self.root / location
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise RegistryError(f"registry {self.config.name}: {location} not found") from exc
        except OSError as exc:
            raise self._os_error(location, exc) from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RegistryError(f"registry {self.config.name}: {location} is not a file")
            parts: list[bytes] = []
            received = 0
            while received <= max_bytes:
                chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - received))
                if not chunk:
                    break
                parts.append(chunk)
                received += len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise self._os_error(location, exc) from exc
        finally:
            os.close(fd)

    def _os_error(self, location: str, exc: OSError) -> RegistryError:
        if exc.errno in (errno.EACCES, errno.EISDIR, errno.ELOOP, errno.ENOTDIR):
            return RegistryError(f"registry {self.config.name}: cannot read {location}")
        return TransportFailure(f"registry {self.config.name}: I/O error on {location}")

    def fetch_bundle(self, entry: IndexEntry, limits: Limits) -> dict[str, bytes]:
        return fetch_archive_bundle(self, entry, limits)

    def close(self) -> None:
        """Nothing to release."""
