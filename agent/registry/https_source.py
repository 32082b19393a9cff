"""``https://`` registries: any static web server or object store serving a published
registry folder.

TLS is verified against the system roots, or only against ``ca_file`` when the config
names one (a hospital's internal CA). Redirects are not followed, plain http is not
spoken, and responses are asked for without content encoding, so the byte cap applies to
what crosses the wire. Each download has an overall deadline as well as httpx's per-read
timeout, so a server that drips bytes forever is cut off.
"""

from __future__ import annotations

import ssl
import time
from urllib.parse import urljoin

import httpx

from agent import __version__
from agent.bundle.verify import is_safe_name
from agent.errors import RegistryError
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.index import IndexEntry
from agent.registry.sources import TransportFailure, fetch_archive_bundle, read_capped


class HttpsSource:
    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self._base = config.url.rstrip("/") + "/"
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(config.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(f"registry {config.name}: cannot load ca_file") from exc
        self._client = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(config.timeout),
            follow_redirects=False,
            headers={"User-Agent": f"edge-agent/{__version__}", "Accept-Encoding": "identity"},
        )

    def fetch(self, location: str, max_bytes: int) -> bytes:
        if not is_safe_name(location):
            raise RegistryError("registry location escapes the registry root")
        url = urljoin(self._base, location)
        deadline = time.monotonic() + self.config.timeout
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code >= 500:
                    raise TransportFailure(
                        f"registry {self.config.name}: HTTP {response.status_code} for {location}"
                    )
                if response.status_code != 200:
                    raise RegistryError(
                        f"registry {self.config.name}: HTTP {response.status_code} for {location}"
                    )
                body = read_capped(
                    response.iter_raw(),
                    response.headers.get("content-length"),
                    what=location,
                    max_bytes=max_bytes,
                    deadline=deadline,
                    too_slow=f"registry {self.config.name}: download too slow",
                )
        except httpx.TransportError as exc:
            raise TransportFailure(
                f"registry {self.config.name}: {exc.__class__.__name__} for {location}"
            ) from exc
        return body

    def fetch_bundle(self, entry: IndexEntry, limits: Limits) -> dict[str, bytes]:
        return fetch_archive_bundle(self, entry, limits)

    def close(self) -> None:
        self._client.close()
