"""``file://`` registries: a folder on a share, a mounted USB stick, a local directory.

The air-gapped path: an operator copies a published registry folder (index, signature,
bundles) onto a stick; the agent checks it exactly as it would a web server's answer.
"""

from __future__ import annotations

import errno
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from agent.bundle.verify import is_safe_name
from agent.errors import RegistryError, SizeLimitExceeded
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.index import IndexEntry
from agent.registry.sources import TransportFailure, fetch_archive_bundle


class FileSource:
    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self.root = Path(url2pathname(urlparse(config.url).path))

    def fetch(self, location: str, max_bytes: int) -> bytes:
        """Read at most ``max_bytes`` (one more byte proves the file is too big, so a
        device or a file that keeps growing cannot exhaust memory)."""
        if not is_safe_name(location):
            raise RegistryError("registry location escapes the registry folder")
        path = self.root / location
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise RegistryError(f"registry {self.config.name}: {location} not found") from exc
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EISDIR):
                raise RegistryError(f"registry {self.config.name}: cannot read {location}") from exc
            raise TransportFailure(f"registry {self.config.name}: I/O error on {location}") from exc
        if len(data) > max_bytes:
            raise SizeLimitExceeded(f"{location} is larger than {max_bytes} bytes")
        return data

    def fetch_bundle(self, entry: IndexEntry, limits: Limits) -> dict[str, bytes]:
        return fetch_archive_bundle(self, entry, limits)

    def close(self) -> None:
        """Nothing to release."""
