"""Reload is all or nothing, on the real `edge-agent serve` process: at SIGHUP the trust
store, the registries, the updater and the admin channel take the new config together, or
the reload is refused whole and the old config keeps running.

Key rotation is done the way docs/operations.md and the Ansible role do it: edit
``trust.keys`` in the config file, then SIGHUP (``systemctl reload``)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agent.bundle.signing import generate_keypair, load_private_key
from agent.bundle.trust import TrustStore
from agent.registry.publish import publish
from tests.integration.agent_process import REPO, AgentProcess, start_agent
from tests.integration.reliability_support import (
    DEMO_KEY,
    config_path_root,
    metric,
    publish_to,
    reliability_root,
    served_version,
    trusted_key_entry,
    wait_for,
    wat_bundle,
)

pytestmark = pytest.mark.integration

DEMO_PUB = REPO / "fixtures/keys/demo-publisher.pub"


def _slow_polls(config: dict[str, Any]) -> None:
    """Polls an hour apart: whatever happens within the test happens because of the
    reload (or an operator's pull), not because a poll came round."""
    config["registries"][0].update(poll_interval=3600, retries=0, timeout=5.0)


def _edit(agent: AgentProcess, change: Any) -> None:
    config = yaml.safe_load(agent.config_path.read_text())
    change(config)
    agent.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def _models(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "models", *args, "--config", str(agent.config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _reload(agent: AgentProcess, expect: str) -> None:
    """SIGHUP, then wait for one more ``expect`` line ("configuration reloaded" or
    "reload refused") than the log held before."""
    before = agent.log_text().count(expect)
    agent.process.send_signal(signal.SIGHUP)
    wait_for(lambda: agent.log_text().count(expect) > before, 15, expect)


def _deactivations(client: httpx.Client) -> float:
    return metric(
        client.get("/metrics").text,
        "edge_agent_model_deactivations_total",
        model="deterioration",
        reason="untrusted_key",
    )


@pytest.fixture
def rotation_key(tmp_path: Path) -> tuple[Path, Path]:
    """A second publisher key pair (private, public)."""
    return generate_keypair(tmp_path / "keys", "rotation")


def test_a_key_revoked_by_reload_deactivates_what_it_signed_at_once(
    tmp_path: Path, rotation_key: tuple[Path, Path]
) -> None:
    key, public = rotation_key

    def trust_both(config: dict[str, Any]) -> None:
        _slow_polls(config)
        config["trust"]["keys"].append(trusted_key_entry(key, public))

    agent = start_agent(reliability_root(tmp_path, edit=trust_both))
    try:
        registry = config_path_root(tmp_path) / "registry"
        # 1.0.1 signed by the rotation key (the index by the demo key): installed, served
        publish(
            wat_bundle(tmp_path / "b101", "1.0.1", key),
            registry.as_uri(),
            load_private_key(DEMO_KEY),
            trust=TrustStore.of(
                load_private_key(DEMO_KEY).public_key(), load_private_key(key).public_key()
            ),
        )
        pulled = _models(agent, "pull")
        assert "installed 1.0.1" in pulled.stdout, pulled.stdout + pulled.stderr
        with agent.client() as client:
            assert served_version(client) == "1.0.1"
            assert _deactivations(client) == 0.0

            _edit(agent, lambda c: c["trust"]["keys"][1].update(revoked=True))
            _reload(agent, "configuration reloaded")
            # at once, not at the next poll (an hour away): the newest version signed by
            # a key still trusted serves, and the store's active version says so
            assert served_version(client) == "1.0.0"
            assert _deactivations(client) == 1.0
            assert client.get("/readyz").status_code == 200
            listed = _models(agent, "list")
            assert "deterioration: *1.0.0 1.0.1  (serving 1.0.0)" in listed.stdout, listed

            # the admin channel runs the reloaded config too: no way back to 1.0.1
            rolled = _models(agent, "rollback", "deterioration", "1.0.1")
            assert rolled.returncode == 2 and "revoked" in rolled.stderr, rolled
            assert served_version(client) == "1.0.0"
    finally:
        assert agent.stop() == 0, agent.log_text()
    log = agent.log_text()
    assert '"model version deactivated"' in log and '"reason": "untrusted_key"' in log

    # and at the next start the revoked version stays out of service
    again = start_agent(agent.config_path)
    try:
        with again.client() as client:
            assert served_version(client) == "1.0.0"
    finally:
        assert again.stop() == 0, again.log_text()


def test_a_key_and_a_registry_added_by_reload_are_used_at_once(
    tmp_path: Path, rotation_key: tuple[Path, Path]
) -> None:
    key, public = rotation_key
    agent = start_agent(reliability_root(tmp_path, edit=_slow_polls))
    try:
        # a second registry, signed by the new publisher key alone, offering 1.0.1
        second = tmp_path / "second-registry"
        publish_to(second, wat_bundle(tmp_path / "b101", "1.0.1", key), key)
        with agent.client() as client:
            assert served_version(client) == "1.0.0"

            def add_key_and_registry(config: dict[str, Any]) -> None:
                config["trust"]["keys"].append(trusted_key_entry(key, public))
                config["registries"].append(
                    {"name": "second", "url": second.as_uri(), "poll_interval": 3600}
                )
                del config["models"][0]["registry"]  # take the newest either offers

            _edit(agent, add_key_and_registry)
            _reload(agent, "configuration reloaded")
            # the updater polls the new registry with the new key at once
            wait_for(lambda: served_version(client) == "1.0.1", 15, "1.0.1 from the new key")
    finally:
        assert agent.stop() == 0, agent.log_text()


def test_a_reload_with_one_broken_part_is_refused_whole(
    tmp_path: Path, rotation_key: tuple[Path, Path]
) -> None:
    key, public = rotation_key

    def trust_both(config: dict[str, Any]) -> None:
        _slow_polls(config)
        config["trust"]["keys"].append(trusted_key_entry(key, public))

    root = config_path_root(tmp_path)
    agent = start_agent(reliability_root(tmp_path, edit=trust_both))
    try:
        registry = root / "registry"
        publish(
            wat_bundle(tmp_path / "b101", "1.0.1", key),
            registry.as_uri(),
            load_private_key(DEMO_KEY),
            trust=TrustStore.of(
                load_private_key(DEMO_KEY).public_key(), load_private_key(key).public_key()
            ),
        )
        assert "installed 1.0.1" in _models(agent, "pull").stdout
        with agent.client() as client:
            assert served_version(client) == "1.0.1"

            # revoke the key, and add an https registry whose CA file does not exist:
            # the registry part cannot be built, so the revocation must not apply either
            def revoke_and_break(config: dict[str, Any]) -> None:
                config["trust"]["keys"][1]["revoked"] = True
                config["registries"].append(
                    {
                        "name": "broken",
                        "url": "https://127.0.0.1:9/reg",
                        "ca_file": str(tmp_path / "missing-ca.pem"),
                    }
                )

            _edit(agent, revoke_and_break)
            _reload(agent, "reload refused")
            assert served_version(client) == "1.0.1"
            assert _deactivations(client) == 0.0
            # the store section needs a restart: a reload changing it is refused too
            _edit(agent, lambda c: (c["registries"].pop(), c["store"].update(keep_versions=9)))
            _reload(agent, "reload refused")
            assert served_version(client) == "1.0.1"
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert "configuration reloaded" not in agent.log_text()
