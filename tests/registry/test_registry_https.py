"""https:// registries against a real TLS server on 127.0.0.1, with a CA made here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bundle_factory import signed_bundle, write_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry_helpers import (
    make_ca_and_server_cert,
    serve_drip,
    serve_endless,
    serve_failing_then,
    serve_folder,
    serve_huge_length,
)

from agent.bundle.trust import TrustStore
from agent.errors import RegistryError, SizeLimitExceeded
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.index import INDEX_FILE
from agent.registry.publish import publish
from agent.registry.sources import TransportFailure, open_source
from agent.registry.updater import Updater
from agent.store import BundleStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[Path, Path]]:
    ca, cert, key = make_ca_and_server_cert(tmp_path_factory.mktemp("tls"))
    return ca, (cert, key)


@pytest.fixture
def registry_folder(tmp_path: Path, publisher_key: Ed25519PrivateKey) -> Path:
    folder = tmp_path / "registry"
    bundle = write_dir(signed_bundle(publisher_key, version="1.0.0"), tmp_path / "bundle")
    publish(bundle, folder.as_uri(), publisher_key)
    return folder


def test_pull_over_tls_with_the_site_ca(
    tmp_path: Path,
    tls: tuple[Path, tuple[Path, Path]],
    registry_folder: Path,
    trust: TrustStore,
) -> None:
    ca, cert = tls
    store = BundleStore(tmp_path / "store")
    with serve_folder(registry_folder, cert) as url:
        source = open_source(RegistryConfig(name="web", url=url + "/", ca_file=ca))
        try:
            updater = Updater([source], store, trust, Limits(), ["sepsis"], lambda n, b: None)
            result = updater.pull_once()[0]
        finally:
            source.close()
    assert (result.outcome, result.registry, result.version) == ("installed", "web", "1.0.0")
    assert store.active_version("sepsis") == "1.0.0"


def test_server_not_signed_by_the_configured_ca_is_refused(
    tmp_path: Path, tls: tuple[Path, tuple[Path, Path]], registry_folder: Path
) -> None:
    _, cert = tls
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    with serve_folder(registry_folder, cert) as url:
        source = open_source(RegistryConfig(name="web", url=url, ca_file=other_ca, retries=0))
        try:
            with pytest.raises(TransportFailure, match="ConnectError"):
                source.fetch(INDEX_FILE, 10_000)
        finally:
            source.close()


def test_endless_download_is_cut_at_the_cap(tls: tuple[Path, tuple[Path, Path]]) -> None:
    ca, cert = tls
    with serve_endless(cert) as url:
        source = open_source(RegistryConfig(name="web", url=url, ca_file=ca, retries=0))
        try:
            started = time.monotonic()
            with pytest.raises(SizeLimitExceeded, match="larger than 1000000"):
                source.fetch("bundles/x.tar.gz", 1_000_000)
            assert time.monotonic() - started < 5
        finally:
            source.close()


def test_endless_index_is_refused_by_the_updater(
    tmp_path: Path, tls: tuple[Path, tuple[Path, Path]], trust: TrustStore
) -> None:
    ca, cert = tls
    with serve_endless(cert) as url:
        source = open_source(RegistryConfig(name="web", url=url, ca_file=ca, retries=0))
        try:
            updater = Updater(
                [source],
                BundleStore(tmp_path / "s"),
                trust,
                Limits(registry_index_max=100_000),
                ["sepsis"],
                lambda n, b: None,
            )
            result = updater.pull_once()[0]
        finally:
            source.close()
    assert (result.outcome, result.reason) == ("refused", "too_large")


def test_announced_oversize_is_refused_before_reading(
    tls: tuple[Path, tuple[Path, Path]],
) -> None:
    ca, cert = tls
    with serve_huge_length(cert) as url:
        source = open_source(RegistryConfig(name="web", url=url, ca_file=ca, retries=0))
        try:
            with pytest.raises(SizeLimitExceeded, match="announced"):
                source.fetch(INDEX_FILE, 1000)
        finally:
            source.close()


def test_server_errors_are_retried_then_succeed(
    tmp_path: Path,
    tls: tuple[Path, tuple[Path, Path]],
    registry_folder: Path,
    trust: TrustStore,
) -> None:
    ca, cert = tls
    with serve_failing_then(registry_folder, cert, failures=2) as url:
        source = open_source(
            RegistryConfig(name="web", url=url, ca_file=ca, retries=3, retry_delay=0.01)
        )
        try:
            updater = Updater(
                [source],
                BundleStore(tmp_path / "s"),
                trust,
                Limits(),
                ["sepsis"],
                lambda n, b: None,
            )
            assert updater.pull_once()[0].outcome == "installed"
        finally:
            source.close()


def test_missing_file_is_not_retried(
    tls: tuple[Path, tuple[Path, Path]], registry_folder: Path
) -> None:
    ca, cert = tls
    with serve_folder(registry_folder, cert) as url:
        source = open_source(RegistryConfig(name="web", url=url, ca_file=ca))
        try:
            with pytest.raises(RegistryError, match="HTTP 404") as info:
                source.fetch("nothing-here.json", 1000)
            assert not isinstance(info.value, TransportFailure)
        finally:
            source.close()


def test_plain_http_is_not_a_registry_scheme() -> None:
    with pytest.raises(ValueError, match="scheme"):
        RegistryConfig(name="web", url="http://127.0.0.1/reg")


def test_a_server_that_drips_forever_is_cut_off_at_the_deadline(
    tls: tuple[Path, tuple[Path, Path]],
) -> None:
    ca, cert = tls
    with serve_drip(cert) as url:
        source = open_source(
            RegistryConfig(name="web", url=url, ca_file=ca, retries=0, timeout=1.0)
        )
        try:
            started = time.monotonic()
            with pytest.raises(TransportFailure, match="too slow"):
                source.fetch(INDEX_FILE, 1_000_000)
            assert time.monotonic() - started < 3
        finally:
            source.close()
