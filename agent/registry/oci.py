"""``oci://host[:port]/repository`` registries (Harbor, the CNCF distribution registry...),
through the ``oras`` client.

Layout under the repository path ``R``:

* ``R/<model>:<version>``: one OCI image manifest per bundle, one layer per bundle file,
  titled by the ``org.opencontainers.image.title`` annotation: ``model.wasm`` as
  ``application/wasm``, ``manifest.json`` and ``manifest.sig`` as the media types below;
  config ``application/vnd.wasm.config.v0+json`` (an empty JSON object).
* ``R/index:latest``: the signed registry index, two layers ``index.json`` and
  ``index.json.sig``.

An index entry for an OCI bundle has ``location`` ``<model>@sha256:<digest>``, ``sha256``
the digest of that image manifest (which pins every layer by digest) and ``size`` the
total of its layers. The agent fetches the image manifest by digest and checks its SHA-256,
then each layer under its declared size and against its digest, and the total against the
index: content addressing does the work an archive's SHA-256 does for file and https
registries. The bundle is then verified like any other.

Downloads go through oras's request path (so its registry token handshake works) but not
through its retry decorator, which sleeps up to minutes on errors: retries are the
updater's, with its backoff. Pulls are anonymous; publishing uses the credentials ``oras``
finds in the Docker config of the user who runs it.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import oras.container
import oras.provider
import requests
from requests.adapters import HTTPAdapter

from agent.bundle.explain import EXPLAIN_FILE
from agent.bundle.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE
from agent.bundle.verify import VerifiedBundle, file_limit, is_safe_name, sha256_hex
from agent.errors import DigestMismatch, RegistryError, SizeLimitExceeded
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.index import INDEX_FILE, INDEX_SIGNATURE_FILE, IndexEntry, RegistryIndex
from agent.registry.index import parse_index as _parse_index
from agent.registry.sources import TransportFailure, read_capped

WASM_MEDIA_TYPE = "application/wasm"
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
MANIFEST_MEDIA_TYPE = "application/vnd.edge-agent.manifest.v1+json"
SIGNATURE_MEDIA_TYPE = "application/vnd.edge-agent.signature.v1+json"
EXPLAIN_MEDIA_TYPE = "application/vnd.edge-agent.explain.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.edge-agent.index.v1+json"
INDEX_CONFIG_MEDIA_TYPE = "application/vnd.edge-agent.index.config.v1+json"
IMAGE_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_REPOSITORY = "index"
INDEX_TAG = "latest"
IMAGE_MANIFEST_MAX = 256 * 1024  # bytes: an image manifest of a few layers is ~1 KiB
TITLE = "org.opencontainers.image.title"

_MEDIA_TYPES = {
    MODEL_FILE: WASM_MEDIA_TYPE,
    MANIFEST_FILE: MANIFEST_MEDIA_TYPE,
    SIGNATURE_FILE: SIGNATURE_MEDIA_TYPE,
    EXPLAIN_FILE: EXPLAIN_MEDIA_TYPE,
    INDEX_FILE: INDEX_MEDIA_TYPE,
    INDEX_SIGNATURE_FILE: SIGNATURE_MEDIA_TYPE,
}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_LOCATION = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]{0,63})@(?P<digest>sha256:[0-9a-f]{64})$")
# The oras retry decorator sleeps 3 s, 5 s, 11 s... on any error; use the undecorated call.
_request_once = oras.provider.Registry.do_request.__wrapped__


class _NotFound(RegistryError):
    """The registry answered 404: no such manifest or blob."""


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout (requests has none by default: a silent registry
    would hang the pull forever)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=self._timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


@dataclass(frozen=True)
class _Layer:
    title: str
    digest: str
    size: int
    media_type: str


def _layers(image_manifest: Any) -> list[_Layer]:
    """The layers of an image manifest; RegistryError if it is not one we understand."""
    layers = image_manifest.get("layers") if isinstance(image_manifest, dict) else None
    if not isinstance(layers, list):
        raise RegistryError("OCI image manifest has no layer list")
    found = []
    for layer in layers:
        if not isinstance(layer, dict):
            raise RegistryError("OCI image manifest layer is not an object")
        annotations = layer.get("annotations") or {}
        title, digest, size = annotations.get(TITLE), layer.get("digest"), layer.get("size")
        if not isinstance(title, str) or not is_safe_name(title):
            raise RegistryError("OCI layer has no usable title annotation")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise RegistryError(f"OCI layer {title} has no sha256 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(f"OCI layer {title} has no size")
        found.append(_Layer(title, digest, size, str(layer.get("mediaType", ""))))
    return found


class _Registry:
    """One ``oci://`` URL: host, repository path and an oras client."""

    def __init__(self, url: str, ca_file: Path | None, timeout: float) -> None:
        parsed = urlparse(url)
        self.host, self.base = parsed.netloc, parsed.path.strip("/")
        if parsed.scheme != "oci" or not self.host or not self.base:
            raise RegistryError("an OCI registry url is oci://host[:port]/repository")
        self.timeout = timeout
        self.client = oras.provider.Registry(
            hostname=self.host, tls_verify=str(ca_file) if ca_file else True
        )
        self.client.session.mount("https://", _TimeoutAdapter(timeout))

    def container(self, repository: str, reference: str) -> oras.container.Container:
        separator = "@" if reference.startswith("sha256:") else ":"
        return self.client.get_container(
            f"{self.host}/{self.base}/{repository}{separator}{reference}"
        )

    def get(self, url: str, accept: str, max_bytes: int) -> bytes:
        """GET ``url`` streaming, at most ``max_bytes``, within the overall timeout."""
        deadline = time.monotonic() + self.timeout
        try:
            response = _request_once(
                self.client, url, "GET", headers={"Accept": accept}, stream=True
            )
            with response:
                if response.status_code == 404:
                    raise _NotFound(f"OCI registry {self.host}: not found")
                if response.status_code >= 500:
                    raise TransportFailure(f"OCI registry {self.host}: HTTP {response.status_code}")
                if response.status_code != 200:
                    raise RegistryError(f"OCI registry {self.host}: HTTP {response.status_code}")
                body = read_capped(
                    response.raw.stream(65536, decode_content=False),
                    response.headers.get("Content-Length"),
                    what="OCI content",
                    max_bytes=max_bytes,
                    deadline=deadline,
                    too_slow=f"OCI registry {self.host}: download too slow",
                )
        except requests.RequestException as exc:
            raise TransportFailure(f"OCI registry {self.host}: {exc.__class__.__name__}") from exc
        except ValueError as exc:  # oras: "Cannot respond to request for authentication"
            raise RegistryError(f"OCI registry {self.host}: authentication required") from exc
        return body

    def image_manifest(self, container: oras.container.Container) -> tuple[bytes, list[_Layer]]:
        url = f"{self.client.prefix}://{container.manifest_url()}"
        raw = self.get(url, IMAGE_MANIFEST_MEDIA_TYPE, IMAGE_MANIFEST_MAX)
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise RegistryError("OCI image manifest is not JSON") from exc
        return raw, _layers(document)

    def blob(self, container: oras.container.Container, layer: _Layer, max_bytes: int) -> bytes:
        """A layer's bytes, refused above ``max_bytes`` or its declared size, and checked
        against its digest (DigestMismatch)."""
        if layer.size > max_bytes:
            raise SizeLimitExceeded(f"{layer.title} is larger than {max_bytes} bytes")
        url = f"{self.client.prefix}://{container.get_blob_url(layer.digest)}"
        data = self.get(url, "*/*", layer.size)
        if len(data) != layer.size or f"sha256:{sha256_hex(data)}" != layer.digest:
            raise DigestMismatch(f"{layer.title}: OCI layer differs from its digest")
        return data

    def index_file(self, name: str, max_bytes: int) -> bytes:
        container = self.container(INDEX_REPOSITORY, INDEX_TAG)
        _, layers = self.image_manifest(container)
        layer = next((entry for entry in layers if entry.title == name), None)
        if layer is None:
            raise RegistryError(f"OCI index artifact has no {name}")
        return self.blob(container, layer, max_bytes)

    def push(self, repository: str, tag: str, files: dict[str, bytes], config_type: str) -> str:
        """Push ``files`` as one artifact; return the image manifest digest."""
        for name in files:
            if "/" in name or name not in _MEDIA_TYPES:
                raise RegistryError(
                    f"an OCI artifact here holds only known top-level files: {name}"
                )
        target = f"{self.host}/{self.base}/{repository}:{tag}"
        with tempfile.TemporaryDirectory() as temp:
            paths = []
            for name, data in files.items():
                (Path(temp) / name).write_bytes(data)
                paths.append(f"{Path(temp) / name}:{_MEDIA_TYPES[name]}")
            config = Path(temp) / ".config.json"
            config.write_bytes(b"{}")
            try:
                response = self.client.push(
                    target=target,
                    files=paths,
                    manifest_config=f"{config}:{config_type}",
                    disable_path_validation=True,
                    quiet=True,
                )
            except (requests.RequestException, ValueError) as exc:
                raise RegistryError(f"OCI push to {self.host} failed: {exc}") from exc
        digest = str(response.headers.get("Docker-Content-Digest", ""))
        if not _DIGEST.match(digest):
            raw, _ = self.image_manifest(self.container(repository, tag))
            digest = f"sha256:{sha256_hex(raw)}"
        return digest


class OciSource:
    """The agent side: the index artifact and bundles by digest (see the module doc)."""

    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self._registry = _Registry(config.url, config.ca_file, config.timeout)

    def fetch(self, location: str, max_bytes: int) -> bytes:
        if location not in (INDEX_FILE, INDEX_SIGNATURE_FILE):
            raise RegistryError(f"an OCI registry is read by index and digest, not {location!r}")
        return self._registry.index_file(location, max_bytes)

    def fetch_bundle(self, entry: IndexEntry, limits: Limits) -> dict[str, bytes]:
        match = _LOCATION.match(entry.location)
        if match is None or match["digest"] != f"sha256:{entry.sha256}":
            raise DigestMismatch("OCI location must be <model>@sha256:<the entry's sha256>")
        container = self._registry.container(match["name"], match["digest"])
        raw, layers = self._registry.image_manifest(container)
        if sha256_hex(raw) != entry.sha256:
            raise DigestMismatch(f"{entry.location}: image manifest differs from the index")
        if sum(layer.size for layer in layers) != entry.size:
            raise DigestMismatch(f"{entry.location}: layer sizes differ from the index")
        files: dict[str, bytes] = {}
        for layer in layers:
            if layer.title in files:
                raise RegistryError(f"{entry.location}: layer {layer.title} appears twice")
            files[layer.title] = self._registry.blob(
                container, layer, file_limit(layer.title, limits)
            )
        return files

    def close(self) -> None:
        self._registry.client.session.close()


class OciTarget:
    """The publisher side: push bundles and the index artifact."""

    def __init__(self, registry_url: str, ca_file: Path | None = None) -> None:
        self._registry = _Registry(registry_url, ca_file, timeout=120.0)

    def current_index(self) -> RegistryIndex | None:
        try:
            data = self._registry.index_file(INDEX_FILE, Limits().registry_index_max)
        except _NotFound:
            return None
        return _parse_index(data)

    def put_bundle(self, verified: VerifiedBundle) -> IndexEntry:
        name, version = verified.manifest.name, verified.manifest.version
        if name == INDEX_REPOSITORY:
            raise RegistryError(f"a model named {INDEX_REPOSITORY!r} clashes with the index")
        files = dict(verified.files)
        digest = self._registry.push(name, version, files, WASM_CONFIG_MEDIA_TYPE)
        return IndexEntry(
            version=version,
            location=f"{name}@{digest}",
            size=sum(len(data) for data in files.values()),
            sha256=digest.removeprefix("sha256:"),
            manifest_sha256=verified.digest,
        )

    def put_index(self, index_bytes: bytes, signature: bytes) -> None:
        files = {INDEX_FILE: index_bytes, INDEX_SIGNATURE_FILE: signature}
        self._registry.push(INDEX_REPOSITORY, INDEX_TAG, files, INDEX_CONFIG_MEDIA_TYPE)
