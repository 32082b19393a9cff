"""oci:// registries against a real CNCF distribution registry (Debian's docker-registry)
on 127.0.0.1, over TLS with a CA made here, through the oras client."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from bundle_factory import signed_bundle, write_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry_helpers import make_ca_and_server_cert

from agent.bundle.manifest import canonical_json
from agent.bundle.signing import sign_manifest
from agent.bundle.trust import TrustStore
from agent.errors import RegistryError
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.oci import WASM_MEDIA_TYPE, OciTarget
from agent.registry.publish import publish
from agent.registry.sources import open_source
from agent.registry.updater import Updater
from agent.store import BundleStore

pytestmark = pytest.mark.integration
pytest.importorskip("oras")

REGISTRY_BINARY = shutil.which("docker-registry")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A distribution registry over TLS: yields (oci url, CA file)."""
    if REGISTRY_BINARY is None:
        pytest.skip("docker-registry (Debian package docker-registry) is not installed")
    folder = tmp_path_factory.mktemp("oci")
    ca, cert, key = make_ca_and_server_cert(folder / "tls")
    port = _free_port()
    config = folder / "config.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {folder / "data"}
http:
  addr: 127.0.0.1:{port}
  tls:
    certificate: {cert}
    key: {key}
"""
    )
    process = subprocess.Popen(
        [REGISTRY_BINARY, "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("docker-registry did not start")
                time.sleep(0.05)
        yield f"oci://127.0.0.1:{port}", ca
    finally:
        process.terminate()
        process.wait(10)


def _publish(tmp_path: Path, url: str, ca: Path, key: Ed25519PrivateKey, version: str) -> None:
    bundle = write_dir(signed_bundle(key, version=version), tmp_path / f"bundle-{version}")
    publish(bundle, url, key, ca_file=ca, expires_in=timedelta(days=1))


def _updater(tmp_path: Path, url: str, ca: Path | None, trust: TrustStore) -> Updater:
    source = open_source(RegistryConfig(name="oci", url=url, ca_file=ca, retries=0))
    return Updater(
        [source], BundleStore(tmp_path / "store"), trust, Limits(), ["sepsis"], lambda n, b: None
    )


def test_publish_and_pull_through_an_oci_registry(
    tmp_path: Path,
    oci: tuple[str, Path],
    publisher_key: Ed25519PrivateKey,
    trust: TrustStore,
) -> None:
    base, ca = oci
    url = f"{base}/hospital/pull"
    _publish(tmp_path, url, ca, publisher_key, "1.0.0")
    _publish(tmp_path, url, ca, publisher_key, "1.1.0")
    updater = _updater(tmp_path, url, ca, trust)
    result = updater.pull_once()[0]
    assert (result.outcome, result.version, result.registry) == ("installed", "1.1.0", "oci")
    index = OciTarget(url, ca).current_index()
    assert index is not None and index.version == 2
    entry = index.models["sepsis"][-1]
    assert entry.location.startswith("sepsis@sha256:")
    client = OciTarget(url, ca)._registry
    _, layers = client.image_manifest(client.container("sepsis", "1.1.0"))
    assert {layer.title: layer.media_type for layer in layers}["model.wasm"] == WASM_MEDIA_TYPE
    assert updater.pull_once()[0].outcome == "up_to_date"


def test_entry_pointing_at_another_artifact_is_refused(
    tmp_path: Path,
    oci: tuple[str, Path],
    publisher_key: Ed25519PrivateKey,
    trust: TrustStore,
) -> None:
    """A signed index whose 2.0.0 entry pins the 1.0.0 artifact (digest and size agree
    with what is served): the bundle inside is not the version announced."""
    base, ca = oci
    url = f"{base}/hospital/mixed"
    _publish(tmp_path, url, ca, publisher_key, "1.0.0")
    target = OciTarget(url, ca)
    index = target.current_index()
    assert index is not None
    document = index.model_dump(mode="json")
    forged = dict(document["models"]["sepsis"][0], version="2.0.0")
    document["models"]["sepsis"].append(forged)
    data = canonical_json(document)
    target.put_index(data, sign_manifest(data, publisher_key))
    result = _updater(tmp_path, url, ca, trust).pull_once()[0]
    assert (result.outcome, result.reason) == ("refused", "bundle")


def test_wrong_size_in_index_is_refused(
    tmp_path: Path,
    oci: tuple[str, Path],
    publisher_key: Ed25519PrivateKey,
    trust: TrustStore,
) -> None:
    base, ca = oci
    url = f"{base}/hospital/size"
    _publish(tmp_path, url, ca, publisher_key, "1.0.0")
    target = OciTarget(url, ca)
    index = target.current_index()
    assert index is not None
    document = index.model_dump(mode="json")
    document["models"]["sepsis"][0]["size"] += 1
    data = canonical_json(document)
    target.put_index(data, sign_manifest(data, publisher_key))
    result = _updater(tmp_path, url, ca, trust).pull_once()[0]
    assert (result.outcome, result.reason) == ("refused", "digest_mismatch")


def test_registry_not_signed_by_the_ca_fails(
    tmp_path: Path, oci: tuple[str, Path], trust: TrustStore
) -> None:
    base, _ = oci
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    result = _updater(tmp_path, f"{base}/hospital/pull", other_ca, trust).pull_once()[0]
    assert (result.outcome, result.reason) == ("failed", "registry")


def test_missing_index_fails(tmp_path: Path, oci: tuple[str, Path], trust: TrustStore) -> None:
    base, ca = oci
    result = _updater(tmp_path, f"{base}/hospital/empty", ca, trust).pull_once()[0]
    assert (result.outcome, result.reason) == ("failed", "registry")


def test_only_index_files_are_fetched_by_name(oci: tuple[str, Path]) -> None:
    base, ca = oci
    source = open_source(RegistryConfig(name="oci", url=f"{base}/x", ca_file=ca))
    with pytest.raises(RegistryError, match="by index and digest"):
        source.fetch("bundles/x.tar.gz", 100)
