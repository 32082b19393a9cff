"""The intake tests' real scoring pipeline: the demo bundle signed with a fresh key,
installed in a store and served with the demo site's mapping (one per test module)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from agent.bundle.archive import read_bundle_dir
from agent.bundle.signing import key_id, raw_public_bytes, sign_bundle_dir
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.config import AgentConfig
from agent.limits import Limits
from agent.pipeline import ScoringPipeline
from agent.store import BundleStore

REPO = Path(__file__).resolve().parents[2]
MODEL = "deterioration"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> ScoringPipeline:
    tmp = tmp_path_factory.mktemp("pipeline")
    key = Ed25519PrivateKey.generate()
    bundle = tmp / "bundle"
    shutil.copytree(REPO / "fixtures" / "demo" / "build" / MODEL, bundle)
    sign_bundle_dir(bundle, key)
    public = key.public_key()
    config = AgentConfig.model_validate(
        {
            "store": {"root": str(tmp / "store")},
            "trust": {
                "keys": [
                    {
                        "id": key_id(public),
                        "public_key": base64.b64encode(raw_public_bytes(public)).decode(),
                    }
                ]
            },
            "models": [{"name": MODEL, "mapping": str(REPO / "config/mappings/demo-site.yaml")}],
            "http": {"enabled": False},
        }
    )
    store = BundleStore(config.store.root)
    verified = verify_bundle(
        read_bundle_dir(bundle, Limits()), TrustStore(config.trust), limits=Limits()
    )
    store.install(verified)
    store.activate(MODEL, verified.manifest.version)
    return ScoringPipeline.from_config(config, CollectorRegistry())
