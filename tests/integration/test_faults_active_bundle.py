"""Degrade, never die, on the real `edge-agent serve` process: at start, a model whose
active version fails verification (one flipped byte in its model.wasm, a signer the config
has since revoked) falls back to the newest valid version in its store; a model with no
valid version is marked unavailable alone, with the reason on /readyz, while the other
models, the listeners and /metrics come up."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agent.bundle.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE, canonical_json
from agent.bundle.signing import generate_keypair, load_private_key, sign_bundle_dir
from agent.bundle.trust import TrustStore
from agent.registry.publish import publish
from tests.integration.agent_process import start_agent
from tests.integration.reliability_support import (
    DEMO_BUNDLE,
    DEMO_KEY,
    config_path_root,
    metric,
    publish_to,
    reliability_root,
    served_version,
    trusted_key_entry,
    wat_bundle,
)

pytestmark = pytest.mark.integration

STORE = "var/demo/store/versions"


def _models(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "models", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _deactivations(client: httpx.Client, reason: str) -> float:
    return metric(
        client.get("/metrics").text,
        "edge_agent_model_deactivations_total",
        model="deterioration",
        reason=reason,
    )


def _install_101(config_path: Path, key: Path) -> None:
    """1.0.1 (signed with ``key``) published and pulled into the store, made active."""
    root = config_path.parent.parent
    demo = load_private_key(DEMO_KEY)
    publish(
        wat_bundle(root / "b101", "1.0.1", key),
        (root / "registry").as_uri(),
        demo,
        trust=TrustStore.of(
            *{p: load_private_key(p).public_key() for p in (DEMO_KEY, key)}.values()
        ),
    )
    pulled = _models(config_path, "pull")
    assert "installed 1.0.1" in pulled.stdout, pulled.stdout + pulled.stderr


def test_a_corrupted_active_bundle_at_start_serves_the_previous_version(
    tmp_path: Path,
) -> None:
    config_path = reliability_root(tmp_path)
    start_agent(config_path).stop()  # 1.0.0 installed
    _install_101(config_path, DEMO_KEY)
    root = config_path_root(tmp_path)
    _flip_a_byte(root / STORE / "deterioration/1.0.1" / MODEL_FILE)

    agent = start_agent(config_path, ready_timeout=30)
    try:
        with agent.client() as client:
            assert served_version(client) == "1.0.0"
            assert client.get("/readyz").json()["unavailable"] == {}
            assert _deactivations(client, "digest_mismatch") == 1.0
        listed = _models(config_path, "list")
        assert "deterioration: *1.0.0 1.0.1  (serving 1.0.0)" in listed.stdout, listed
    finally:
        assert agent.stop() == 0, agent.log_text()


def test_a_revoked_signer_at_start_serves_the_newest_version_by_a_trusted_key(
    tmp_path: Path,
) -> None:
    key, public = generate_keypair(tmp_path / "keys", "rotation")

    def trust_both(config: dict[str, Any]) -> None:
        config["trust"]["keys"].append(trusted_key_entry(key, public))

    config_path = reliability_root(tmp_path, edit=trust_both)
    start_agent(config_path).stop()
    _install_101(config_path, key)
    config = yaml.safe_load(config_path.read_text())
    config["trust"]["keys"][1]["revoked"] = True
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    agent = start_agent(config_path, ready_timeout=30)
    try:
        with agent.client() as client:
            assert served_version(client) == "1.0.0"
            assert _deactivations(client, "untrusted_key") == 1.0
    finally:
        assert agent.stop() == 0, agent.log_text()


def _second_model(tmp_path: Path, registry: Path, config_dir: Path) -> None:
    """Publish the demo bundle renamed "early-warning" and its mapping beside the demo's."""
    bundle = tmp_path / "early-warning"
    shutil.copytree(DEMO_BUNDLE, bundle)
    manifest = json.loads((bundle / MANIFEST_FILE).read_bytes())
    manifest["name"] = "early-warning"
    (bundle / MANIFEST_FILE).write_bytes(canonical_json(manifest))
    (bundle / SIGNATURE_FILE).unlink()
    sign_bundle_dir(bundle, load_private_key(DEMO_KEY))
    publish_to(registry, bundle, DEMO_KEY)
    mapping = (config_dir / "mappings/demo-site.yaml").read_text()
    (config_dir / "mappings/early-warning.yaml").write_text(
        mapping.replace("model: deterioration", "model: early-warning")
    )


def test_a_model_with_no_valid_version_is_unavailable_alone(tmp_path: Path) -> None:
    def two_models(config: dict[str, Any]) -> None:
        registry = config_path_root(tmp_path) / "registry"
        _second_model(tmp_path, registry, config_path_root(tmp_path) / "config")
        config["models"].append(
            {"name": "early-warning", "mapping": "mappings/early-warning.yaml", "registry": "demo"}
        )
        config["registries"][0]["poll_interval"] = 3600

    config_path = reliability_root(tmp_path, edit=two_models)
    start_agent(config_path).stop()  # both models installed
    root = config_path_root(tmp_path)
    _flip_a_byte(root / STORE / "deterioration/1.0.0" / MODEL_FILE)

    agent = start_agent(config_path, ready_timeout=30, up_path="/healthz")
    try:
        with agent.client() as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["models"] == {"deterioration": False, "early-warning": True}
            assert set(body["unavailable"]) == {"deterioration"}
            assert "digest_mismatch" in body["unavailable"]["deterioration"]
            assert client.get("/healthz").status_code == 200
            assert _deactivations(client, "digest_mismatch") == 1.0
            models = client.get("/v1/models").json()["models"]
            assert [m["name"] for m in models] == ["early-warning"]
        mllp = yaml.safe_load(config_path.read_text())["mllp"]
        with socket.create_connection((mllp["host"], mllp["port"]), timeout=5):
            pass  # the MLLP listener is up
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert '"model unavailable"' in agent.log_text()
