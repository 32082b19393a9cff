"""Small real bundles for the trust, store and registry tests: a valid manifest over
arbitrary model bytes, signed with a real Ed25519 key. Imported by the conftest of
tests/bundle, tests/store and tests/registry."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE, BundleManifest
from agent.bundle.signing import sign_manifest
from agent.bundle.trust import TrustStore


def manifest_for(name: str, version: str, files: dict[str, bytes]) -> BundleManifest:
    return BundleManifest.model_validate(
        {
            "name": name,
            "version": version,
            "abi_version": 1,
            "inputs": [{"name": "age", "unit": "a", "min": 0, "max": 120}],
            "outputs": [{"name": "risk", "kind": "probability", "class_label": "yes"}],
            "reference": {"rows": 10, "features": {"age": {"count": 10, "median": 60.0}}},
            "provenance": {
                "training_data_sha256": "0" * 64,
                "creator": "tests",
                "created": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            },
            "files": {
                n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                for n, d in files.items()
            },
        }
    )


def unsigned_bundle(
    name: str = "sepsis", version: str = "1.0.0", model: bytes | None = None
) -> dict[str, bytes]:
    """model.wasm + manifest.json (what the compiler produces)."""
    payload = {MODEL_FILE: model if model is not None else f"wasm {name} {version}".encode()}
    manifest = manifest_for(name, version, payload)
    return {**payload, MANIFEST_FILE: manifest.canonical_bytes()}


def signed_bundle(
    key: Ed25519PrivateKey,
    name: str = "sepsis",
    version: str = "1.0.0",
    model: bytes | None = None,
) -> dict[str, bytes]:
    files = unsigned_bundle(name, version, model)
    files[SIGNATURE_FILE] = sign_manifest(files[MANIFEST_FILE], key)
    return files


def write_dir(files: dict[str, bytes], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return directory


@pytest.fixture
def publisher_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trust(publisher_key: Ed25519PrivateKey) -> TrustStore:
    return TrustStore.of(publisher_key.public_key())
