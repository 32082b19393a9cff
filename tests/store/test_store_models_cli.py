"""``edge-agent models list|pull|rollback`` against a real config, store and registry."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from bundle_factory import signed_bundle, write_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.manifest import MODEL_FILE
from agent.bundle.signing import key_id, raw_public_bytes
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.cli import main
from agent.limits import Limits
from agent.registry.publish import publish
from agent.store import BundleStore


@pytest.fixture
def site(tmp_path: Path, publisher_key: Ed25519PrivateKey) -> Path:
    registry = tmp_path / "registry"
    for version in ("1.0.0", "1.1.0"):
        bundle = write_dir(signed_bundle(publisher_key, version=version), tmp_path / version)
        publish(bundle, registry.as_uri(), publisher_key)
    public = publisher_key.public_key()
    (tmp_path / "sepsis.yaml").write_text("# mapping (not read by these commands)\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"""
store:
  root: store
  keep_versions: 3
trust:
  keys:
    - id: {key_id(public)}
      public_key: {base64.b64encode(raw_public_bytes(public)).decode()}
registries:
  - name: main
    url: {registry.as_uri()}
    retries: 0
models:
  - name: sepsis
    mapping: sepsis.yaml
    registry: main
"""
    )
    return config


def test_pull_list_rollback(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "--config", str(site)]) == 0
    assert "sepsis: installed 1.1.0 [main]" in capsys.readouterr().out
    assert main(["models", "pull", "--config", str(site)]) == 0
    assert "up_to_date" in capsys.readouterr().out
    store = BundleStore(site.parent / "store")
    assert store.versions("sepsis") == ["1.1.0"]
    assert main(["models", "list", "--config", str(site)]) == 0
    assert "sepsis: *1.1.0" in capsys.readouterr().out
    assert main(["models", "rollback", "--config", str(site), "sepsis"]) == 2  # nothing older


def test_rollback_refuses_a_version_changed_at_rest(
    site: Path, publisher_key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    store = BundleStore(site.parent / "store")
    trust = TrustStore.of(publisher_key.public_key())
    for version in ("1.0.0", "1.1.0"):
        files = signed_bundle(publisher_key, version=version)
        store.install(verify_bundle(files, trust, limits=Limits()))
    store.activate("sepsis", "1.1.0")
    module = store.version_dir("sepsis", "1.0.0") / MODEL_FILE
    module.chmod(0o644)
    module.write_bytes(b"tampered")
    assert main(["models", "rollback", "--config", str(site), "sepsis"]) == 2
    assert store.active_version("sepsis") == "1.1.0"
    module.write_bytes(signed_bundle(publisher_key, version="1.0.0")[MODEL_FILE])
    assert main(["models", "rollback", "--config", str(site), "sepsis", "--to", "1.0.0"]) == 0
    assert store.active_version("sepsis") == "1.0.0"
    assert "active version is now 1.0.0" in capsys.readouterr().out
