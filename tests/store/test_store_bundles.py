"""The bundle store on a real folder: install, activate, rollback, prune, re-verify."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bundle_factory import signed_bundle
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.manifest import MODEL_FILE
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle, verify_bundle
from agent.errors import BundleError, DigestMismatch, RollbackError, StoreError, UntrustedKey
from agent.limits import Limits
from agent.store import BundleStore, StoreConfig

LIMITS = Limits()


def _verified(
    key: Ed25519PrivateKey, trust: TrustStore, version: str, name: str = "sepsis"
) -> VerifiedBundle:
    return verify_bundle(signed_bundle(key, name=name, version=version), trust, limits=LIMITS)


@pytest.fixture
def store(tmp_path: Path) -> BundleStore:
    return BundleStore(tmp_path / "store", keep_versions=2)


def test_install_activate_load(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    bundle = _verified(publisher_key, trust, "1.0.0")
    path = store.install(bundle)
    assert path == store.version_dir("sepsis", "1.0.0")
    assert store.active_version("sepsis") is None  # installing does not activate
    store.activate("sepsis", "1.0.0")
    loaded = store.load("sepsis", trust, LIMITS)
    assert loaded.digest == bundle.digest
    assert dict(loaded.files) == dict(bundle.files)
    assert store.models() == ["sepsis"]
    assert not list((store.root / "tmp").iterdir())


def test_from_config_resolves_root(tmp_path: Path) -> None:
    config = StoreConfig.model_validate(
        {"root": "store", "keep_versions": 5}, context={"base_dir": tmp_path}
    )
    store = BundleStore.from_config(config)
    assert store.root == tmp_path / "store" and store.keep_versions == 5


def test_older_or_equal_version_is_refused_as_rollback(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store.install(_verified(publisher_key, trust, "1.2.0"))
    with pytest.raises(RollbackError, match="not newer"):
        store.install(_verified(publisher_key, trust, "1.1.9"))
    other_content = verify_bundle(
        signed_bundle(publisher_key, version="1.2.0", model=b"other"), trust, limits=LIMITS
    )
    with pytest.raises(RollbackError):
        store.install(other_content)
    assert store.versions("sepsis") == ["1.2.0"]


def test_operator_may_install_an_older_version(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store.install(_verified(publisher_key, trust, "2.0.0"))
    store.install(_verified(publisher_key, trust, "1.0.0"), allow_rollback=True)
    assert store.versions("sepsis") == ["1.0.0", "2.0.0"]


def test_rollback_floor_survives_pruning(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    """Even when the newest version folder is gone, an older one is still a rollback."""
    store.install(_verified(publisher_key, trust, "3.0.0"))
    store.activate("sepsis", "3.0.0")
    os.rename(store.version_dir("sepsis", "3.0.0"), store.root / "elsewhere")
    with pytest.raises(RollbackError):
        store.install(_verified(publisher_key, trust, "2.0.0"))


def test_same_bundle_twice_is_a_no_op_with_allow_rollback(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    bundle = _verified(publisher_key, trust, "1.0.0")
    store.install(bundle)
    assert store.install(bundle, allow_rollback=True) == store.version_dir("sepsis", "1.0.0")
    other = verify_bundle(
        signed_bundle(publisher_key, version="1.0.0", model=b"other"), trust, limits=LIMITS
    )
    with pytest.raises(StoreError, match="different content"):
        store.install(other, allow_rollback=True)


def test_bundle_changed_at_rest_is_refused_at_load(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store.install(_verified(publisher_key, trust, "1.0.0"))
    store.activate("sepsis", "1.0.0")
    module = store.version_dir("sepsis", "1.0.0") / MODEL_FILE
    module.chmod(0o644)
    module.write_bytes(b"patched on disk")
    with pytest.raises(DigestMismatch):
        store.load("sepsis", trust, LIMITS)


def test_key_revoked_after_install_is_refused_at_load(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store.install(_verified(publisher_key, trust, "1.0.0"))
    store.activate("sepsis", "1.0.0")
    with pytest.raises(UntrustedKey):
        store.load("sepsis", TrustStore.of(Ed25519PrivateKey.generate().public_key()), LIMITS)


def test_bundle_moved_to_another_version_folder_is_refused(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store.install(_verified(publisher_key, trust, "1.0.0"))
    os.rename(store.version_dir("sepsis", "1.0.0"), store.root / "versions" / "sepsis" / "9.0.0")
    with pytest.raises(BundleError, match="another bundle"):
        store.load("sepsis", trust, LIMITS, version="9.0.0")


def test_load_without_active_version(store: BundleStore, trust: TrustStore) -> None:
    with pytest.raises(StoreError, match="no active version"):
        store.load("sepsis", trust, LIMITS)


def test_activate_unknown_version_keeps_the_old_one(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store.install(_verified(publisher_key, trust, "1.0.0"))
    store.activate("sepsis", "1.0.0")
    with pytest.raises(StoreError, match="not installed"):
        store.activate("sepsis", "1.5.0")
    assert store.active_version("sepsis") == "1.0.0"


def test_rollback_to_previous_and_to_given_version(
    tmp_path: Path, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store = BundleStore(tmp_path / "s", keep_versions=3)
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        store.install(_verified(publisher_key, trust, version))
    store.activate("sepsis", "1.2.0")
    assert store.rollback("sepsis") == "1.1.0"
    assert store.active_version("sepsis") == "1.1.0"
    assert store.rollback("sepsis", "1.2.0") == "1.2.0"
    store.activate("sepsis", "1.0.0")
    with pytest.raises(StoreError, match="no installed version"):
        store.rollback("sepsis")


def test_prune_keeps_newest_and_the_active_one(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store.install(_verified(publisher_key, trust, "1.0.0"))
    store.activate("sepsis", "1.0.0")
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        store.install(_verified(publisher_key, trust, version))
    store.activate("sepsis", "1.0.0")  # activation prunes: the newest two and the active
    assert store.versions("sepsis") == ["1.0.0", "1.2.0", "1.3.0"]
    store.activate("sepsis", "1.3.0")  # activation prunes too
    assert store.versions("sepsis") == ["1.2.0", "1.3.0"]


def test_crash_leftovers_are_discarded_on_open(
    tmp_path: Path, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store = BundleStore(tmp_path / "s")
    half = store.root / "tmp" / "sepsis-half"
    half.mkdir()
    (half / MODEL_FILE).write_bytes(b"half written")
    store = BundleStore(tmp_path / "s")
    assert not half.exists()
    assert store.versions("sepsis") == []


def test_registry_index_version_only_rises(store: BundleStore) -> None:
    assert store.last_index_version("main") == 0
    store.record_index_version("main", 5)
    store.record_index_version("main", 3)
    assert store.last_index_version("main") == 5
    with pytest.raises(StoreError):
        store.last_index_version("../etc")


def test_names_that_escape_are_refused(store: BundleStore) -> None:
    with pytest.raises(StoreError):
        store.versions("../secrets")
    with pytest.raises(StoreError):
        store.version_dir("sepsis", "../../1.0.0")


def test_failed_pointer_write_leaves_the_old_version_active(
    store: BundleStore,
    publisher_key: Ed25519PrivateKey,
    trust: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash between writing the new pointer and replacing the old one."""
    for version in ("1.0.0", "1.1.0"):
        store.install(_verified(publisher_key, trust, version))
    store.activate("sepsis", "1.0.0")

    def crash(src: object, dst: object) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power lost"):
        store.activate("sepsis", "1.1.0")
    monkeypatch.undo()
    assert store.active_version("sepsis") == "1.0.0"
    assert [p.name for p in (store.root / "active").iterdir()] == ["sepsis"]


def test_failed_install_leaves_no_partial_version(
    store: BundleStore,
    publisher_key: Ed25519PrivateKey,
    trust: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk full"):
        store.install(_verified(publisher_key, trust, "1.0.0"))
    monkeypatch.undo()
    assert store.versions("sepsis") == []
    assert not list((store.root / "tmp").iterdir())


def test_discard_restores_the_floor_and_spares_the_active(
    store: BundleStore, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    store.install(_verified(publisher_key, trust, "1.0.0"))
    store.activate("sepsis", "1.0.0")
    store.install(_verified(publisher_key, trust, "1.1.0"))
    store.discard("sepsis", "1.1.0", floor="1.0.0")
    assert store.versions("sepsis") == ["1.0.0"]
    assert store.highest_installed("sepsis") == "1.0.0"
    store.install(_verified(publisher_key, trust, "1.1.0"))  # no longer a rollback
    with pytest.raises(StoreError, match="active"):
        store.discard("sepsis", "1.0.0", floor=None)
