"""The pull loop against a real file:// registry published with real keys."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bundle_factory import signed_bundle, write_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.archive import archive_bytes
from agent.bundle.manifest import canonical_json
from agent.bundle.signing import sign_manifest
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle
from agent.errors import AbiViolation, RegistryError
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.index import INDEX_FILE, INDEX_SIGNATURE_FILE, parse_index
from agent.registry.publish import publish, refresh_index
from agent.registry.sources import TransportFailure, open_source, with_retries
from agent.registry.updater import PullResult, Updater, poll_delay
from agent.store import BundleStore

LIMITS = Limits()


class Harness:
    def __init__(self, tmp_path: Path, key: Ed25519PrivateKey, trust: TrustStore) -> None:
        self.tmp = tmp_path
        self.key = key
        self.trust = trust
        self.folder = tmp_path / "registry"
        self.url = self.folder.as_uri()
        self.store = BundleStore(tmp_path / "store")
        self.installed: list[tuple[str, str]] = []
        self.results: list[PullResult] = []
        self.clock = datetime.now(UTC)

    def publish(self, version: str, name: str = "sepsis", **kwargs: object) -> None:
        bundle = write_dir(
            signed_bundle(self.key, name=name, version=version), self.tmp / f"b-{name}-{version}"
        )
        publish(bundle, self.url, self.key, **kwargs)  # type: ignore[arg-type]

    def updater(self, models: tuple[str, ...] = ("sepsis",), **config: object) -> Updater:
        source = open_source(
            RegistryConfig(name="main", url=self.url, retries=0, **config)  # type: ignore[arg-type]
        )

        def on_installed(name: str, bundle: VerifiedBundle) -> None:
            self.installed.append((name, bundle.manifest.version))

        return Updater(
            [source],
            self.store,
            self.trust,
            LIMITS,
            models,
            on_installed,
            on_result=self.results.append,
            clock=lambda: self.clock,
        )


@pytest.fixture
def harness(tmp_path: Path, publisher_key: Ed25519PrivateKey, trust: TrustStore) -> Harness:
    return Harness(tmp_path, publisher_key, trust)


def _only(results: list[PullResult]) -> PullResult:
    assert len(results) == 1
    return results[0]


def test_pull_installs_activates_then_is_up_to_date(harness: Harness) -> None:
    harness.publish("1.0.0")
    updater = harness.updater()
    result = _only(updater.pull_once())
    assert (result.outcome, result.reason, result.version) == ("installed", "ok", "1.0.0")
    assert harness.store.active_version("sepsis") == "1.0.0"
    assert harness.installed == [("sepsis", "1.0.0")]
    assert harness.results == [result]
    assert _only(updater.pull_once()).outcome == "up_to_date"
    harness.publish("1.1.0")
    assert _only(updater.pull_once()).version == "1.1.0"
    assert harness.store.active_version("sepsis") == "1.1.0"
    assert harness.store.last_index_version("main") == 2


def test_tampered_archive_in_registry_is_refused_and_active_kept(harness: Harness) -> None:
    harness.publish("1.0.0")
    updater = harness.updater()
    updater.pull_once()
    harness.publish("1.1.0")
    archive = harness.folder / "bundles/sepsis/sepsis-1.1.0.tar.gz"
    data = bytearray(archive.read_bytes())
    data[-20] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = _only(updater.pull_once())
    assert (result.outcome, result.reason) == ("refused", "digest_mismatch")
    assert harness.store.active_version("sepsis") == "1.0.0"
    assert harness.store.versions("sepsis") == ["1.0.0"]


def test_older_signed_bundle_served_under_a_new_entry_is_refused(harness: Harness) -> None:
    """A mirror serves the older, validly signed bundle where the index lists the new
    one (to keep a known flaw in service): the index pins size and SHA-256."""
    harness.publish("1.0.0")
    harness.publish("2.0.0")
    index = parse_index((harness.folder / INDEX_FILE).read_bytes())
    old = harness.folder / index.models["sepsis"][0].location
    new = harness.folder / index.models["sepsis"][1].location
    new.write_bytes(old.read_bytes())
    result = _only(harness.updater().pull_once())
    # too_large when the old archive happens to be longer, else digest_mismatch
    assert result.outcome == "refused"
    assert result.reason in ("digest_mismatch", "too_large")
    assert harness.store.active_version("sepsis") is None


def test_bundle_not_matching_its_index_entry_is_refused(harness: Harness) -> None:
    """Index re-signed by the publisher over a wrong archive: pins match the archive but
    the bundle inside is another version than the entry announces."""
    harness.publish("1.0.0")
    index_path = harness.folder / INDEX_FILE
    document = json.loads(index_path.read_bytes())
    document["models"]["sepsis"][0]["version"] = "3.0.0"
    data = canonical_json(document)
    index_path.write_bytes(data)
    (harness.folder / INDEX_SIGNATURE_FILE).write_bytes(sign_manifest(data, harness.key))
    result = _only(harness.updater().pull_once())
    assert (result.outcome, result.reason) == ("refused", "bundle")


def test_expired_index_is_refused(harness: Harness) -> None:
    harness.publish("1.0.0", expires_in=timedelta(hours=1))
    harness.clock += timedelta(hours=2)
    result = _only(harness.updater().pull_once())
    assert (result.outcome, result.reason) == ("refused", "expired")
    assert harness.store.versions("sepsis") == []


def test_replayed_older_index_is_refused(harness: Harness) -> None:
    harness.publish("1.0.0")
    saved = {n: (harness.folder / n).read_bytes() for n in (INDEX_FILE, INDEX_SIGNATURE_FILE)}
    harness.publish("1.1.0")
    updater = harness.updater()
    updater.pull_once()
    for name, data in saved.items():
        (harness.folder / name).write_bytes(data)
    result = _only(updater.pull_once())
    assert (result.outcome, result.reason) == ("refused", "rollback")
    assert harness.store.active_version("sepsis") == "1.1.0"


def test_index_signed_by_untrusted_key_is_refused(harness: Harness) -> None:
    harness.publish("1.0.0")
    refresh_index(harness.url, Ed25519PrivateKey.generate())
    result = _only(harness.updater().pull_once())
    assert (result.outcome, result.reason) == ("refused", "untrusted_key")


def test_oversize_bundle_is_refused_before_download(harness: Harness) -> None:
    harness.publish("1.0.0")
    source = open_source(RegistryConfig(name="main", url=harness.url, retries=0))
    updater = Updater(
        [source],
        harness.store,
        harness.trust,
        Limits(bundle_download_max=100),
        ["sepsis"],
        lambda n, b: None,
    )
    result = _only(updater.pull_once())
    assert (result.outcome, result.reason) == ("refused", "too_large")


def test_archive_longer_than_the_index_states_is_refused(harness: Harness) -> None:
    harness.publish("1.0.0")
    archive = harness.folder / "bundles/sepsis/sepsis-1.0.0.tar.gz"
    archive.write_bytes(archive.read_bytes() + b"\x00" * 1000)
    result = _only(harness.updater().pull_once())
    assert (result.outcome, result.reason) == ("refused", "too_large")


def test_pipeline_refusal_keeps_the_old_version_active(
    harness: Harness, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    harness.publish("1.0.0")
    harness.updater().pull_once()
    harness.publish("1.1.0")

    def refuse(name: str, bundle: VerifiedBundle) -> None:
        raise AbiViolation("module imports something")

    source = open_source(RegistryConfig(name="main", url=harness.url, retries=0))
    updater = Updater([source], harness.store, trust, LIMITS, ["sepsis"], refuse)
    result = _only(updater.pull_once())
    assert (result.outcome, result.reason) == ("refused", "abi")
    assert harness.store.active_version("sepsis") == "1.0.0"
    assert harness.store.versions("sepsis") == ["1.0.0"]
    # once the site is fixed, the next poll installs the same version
    fixed = harness.updater()
    assert _only(fixed.pull_once()).outcome == "installed"
    assert harness.store.active_version("sepsis") == "1.1.0"


def test_unreachable_registry_fails_and_keeps_active(harness: Harness) -> None:
    harness.publish("1.0.0")
    updater = harness.updater()
    updater.pull_once()
    (harness.folder / INDEX_FILE).unlink()
    result = _only(updater.pull_once())
    assert (result.outcome, result.reason) == ("failed", "registry")
    assert harness.store.active_version("sepsis") == "1.0.0"


def test_model_not_listed_fails(harness: Harness) -> None:
    harness.publish("1.0.0")
    results = harness.updater(models=("sepsis", "aki")).pull_once()
    assert [(r.model, r.outcome) for r in results] == [("sepsis", "installed"), ("aki", "failed")]


def test_highest_version_across_registries_wins(
    tmp_path: Path, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store = BundleStore(tmp_path / "store")
    sources = []
    for name, version in (("a", "1.0.0"), ("b", "1.4.0")):
        folder = tmp_path / name
        bundle = write_dir(signed_bundle(publisher_key, version=version), tmp_path / f"b{name}")
        publish(bundle, folder.as_uri(), publisher_key)
        sources.append(open_source(RegistryConfig(name=name, url=folder.as_uri())))
    updater = Updater(sources, store, trust, LIMITS, ["sepsis"], lambda n, b: None)
    result = _only(updater.pull_once())
    assert (result.registry, result.version) == ("b", "1.4.0")
    pinned = Updater(
        sources,
        BundleStore(tmp_path / "store2"),
        trust,
        LIMITS,
        ["sepsis"],
        lambda n, b: None,
        registry_of={"sepsis": "a"},
    )
    assert _only(pinned.pull_once()).version == "1.0.0"


def test_operator_rollback_sticks(harness: Harness) -> None:
    harness.publish("1.0.0")
    updater = harness.updater()
    updater.pull_once()
    harness.publish("1.1.0")
    updater.pull_once()
    assert harness.store.rollback("sepsis") == "1.0.0"
    assert _only(updater.pull_once()).outcome == "up_to_date"
    assert harness.store.active_version("sepsis") == "1.0.0"


def test_publish_same_version_with_other_content_is_refused(harness: Harness) -> None:
    harness.publish("1.0.0")
    harness.publish("1.0.0")  # identical: only re-signs
    other = write_dir(
        signed_bundle(harness.key, version="1.0.0", model=b"another build"), harness.tmp / "o"
    )
    with pytest.raises(RegistryError, match="other content"):
        publish(other, harness.url, harness.key)


def test_publish_an_archive_and_refuse_https_targets(harness: Harness) -> None:
    archive = harness.tmp / "b.tar.gz"
    archive.write_bytes(archive_bytes(signed_bundle(harness.key)))
    entry = publish(archive, harness.url, harness.key)
    assert (harness.folder / entry.location).stat().st_size == entry.size
    with pytest.raises(RegistryError, match="file://"):
        publish(archive, "https://example.org/reg", harness.key)


def test_retries_transport_failures_with_backoff() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransportFailure("connection reset")
        return "ok"

    assert with_retries(flaky, retries=3, delay=0.5, sleep=waits.append) == "ok"
    assert len(waits) == 2 and 0.5 <= waits[0] <= 0.55 and 1.0 <= waits[1] <= 1.1
    with pytest.raises(TransportFailure):
        with_retries(
            lambda: flaky() if False else (_ for _ in ()).throw(TransportFailure("x")),
            retries=1,
            delay=0,
            sleep=waits.append,
        )


def test_refusals_are_not_retried(harness: Harness) -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise RegistryError("404")

    with pytest.raises(RegistryError):
        with_retries(refused, retries=3, delay=0)
    assert calls == [1]


def test_background_thread_polls_and_stops(harness: Harness) -> None:
    harness.publish("1.0.0")
    installed = threading.Event()
    source = open_source(RegistryConfig(name="main", url=harness.url, poll_interval=1.0, retries=0))
    updater = Updater(
        [source],
        harness.store,
        harness.trust,
        LIMITS,
        ["sepsis"],
        lambda n, b: installed.set(),
    )
    updater.start()
    try:
        assert installed.wait(5.0)
    finally:
        updater.stop()
    assert harness.store.active_version("sepsis") == "1.0.0"


def test_poll_delay_doubles_on_failure_up_to_the_cap() -> None:
    config = RegistryConfig(name="r", url="file:///srv/r", poll_interval=300, backoff_max=3600)
    assert [poll_delay(config, n) for n in range(6)] == [300, 600, 1200, 2400, 3600, 3600]
    short_cap = RegistryConfig(name="r", url="file:///srv/r", poll_interval=300, backoff_max=60)
    assert poll_delay(short_cap, 3) == 300


def test_pipeline_crash_is_a_failure_and_the_version_is_retried(harness: Harness) -> None:
    harness.publish("1.0.0")

    def crash(name: str, bundle: VerifiedBundle) -> None:
        raise RuntimeError("bug in the pipeline")

    source = open_source(RegistryConfig(name="main", url=harness.url, retries=0))
    updater = Updater([source], harness.store, harness.trust, LIMITS, ["sepsis"], crash)
    result = _only(updater.pull_once())
    assert (result.outcome, result.reason) == ("failed", "internal")
    assert harness.store.versions("sepsis") == []
    assert _only(harness.updater().pull_once()).outcome == "installed"


def test_reconfigure_takes_new_keys_sources_and_models_at_the_next_pull(
    harness: Harness, tmp_path: Path
) -> None:
    """What SIGHUP hands the updater: a pull after ``reconfigure`` verifies with the new
    trust store against the new sources; the replaced source is closed."""
    other_key = Ed25519PrivateKey.generate()
    second = tmp_path / "second"
    bundle = write_dir(signed_bundle(other_key, version="2.0.0"), tmp_path / "b-other")
    publish(bundle, second.as_uri(), other_key)
    updater = harness.updater()
    assert _only(updater.pull_once()).outcome == "failed"  # the harness registry is empty
    source = open_source(RegistryConfig(name="second", url=second.as_uri(), retries=0))
    updater.reconfigure(
        [source], TrustStore.of(harness.key.public_key(), other_key.public_key()), ["sepsis"]
    )
    result = _only(updater.pull_once())
    assert (result.registry, result.outcome, result.version) == ("second", "installed", "2.0.0")


def test_a_fifo_in_a_file_registry_is_refused_at_once(harness: Harness) -> None:
    harness.folder.mkdir()
    os.mkfifo(harness.folder / INDEX_FILE)
    started = time.monotonic()
    result = _only(harness.updater(timeout=30.0).pull_once())
    assert (result.outcome, result.reason) == ("failed", "registry")
    assert time.monotonic() - started < 5
