"""build_updater: the agent config and a pipeline-shaped object wired to the real Monitor,
so the daemon's pull outcomes reach the metrics with the monitor's own vocabulary."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from bundle_factory import signed_bundle, write_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from agent.bundle.signing import key_id, raw_public_bytes
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle
from agent.config import load_config
from agent.limits import Limits
from agent.monitor.config import MonitorConfig
from agent.monitor.monitor import Monitor
from agent.registry.publish import publish
from agent.registry.updater import build_updater
from agent.rollout.config import Placement
from agent.store import BundleStore


@dataclass
class PipelineShape:
    store: BundleStore
    trust: TrustStore
    limits: Limits
    monitor: Monitor
    activated: list[str] = field(default_factory=list)

    def place(self, bundle: VerifiedBundle) -> Placement:
        self.activated.append(bundle.manifest.version)
        return "active"


def test_build_updater_counts_pulls_in_the_monitor(
    tmp_path: Path, publisher_key: Ed25519PrivateKey
) -> None:
    registry = tmp_path / "registry"
    bundle = write_dir(signed_bundle(publisher_key, version="1.0.0"), tmp_path / "b")
    publish(bundle, registry.as_uri(), publisher_key)
    public = publisher_key.public_key()
    (tmp_path / "m.yaml").write_text("{}\n")
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(
        f"""
store: {{root: store}}
trust:
  keys:
    - id: {key_id(public)}
      public_key: {base64.b64encode(raw_public_bytes(public)).decode()}
registries:
  - {{name: main, url: "{registry.as_uri()}", retries: 0}}
models:
  - {{name: sepsis, mapping: m.yaml, registry: main}}
"""
    )
    config = load_config(config_path)
    metrics = CollectorRegistry()
    pipeline = PipelineShape(
        BundleStore.from_config(config.store),
        TrustStore(config.trust),
        config.resolved_limits,
        Monitor(metrics, MonitorConfig(), ["sepsis"]),
    )
    updater = build_updater(config, pipeline)
    assert [r.outcome for r in updater.pull_once()] == ["installed"]
    assert [r.outcome for r in updater.pull_once()] == ["up_to_date"]
    assert pipeline.activated == ["1.0.0"]
    labels = {"model": "sepsis", "registry": "main"}
    assert metrics.get_sample_value("edge_agent_bundle_pulls_total", labels) == 2
    assert metrics.get_sample_value("edge_agent_bundle_updates_total", labels) == 1
    newer = write_dir(signed_bundle(publisher_key, version="1.1.0"), tmp_path / "b2")
    entry = publish(newer, registry.as_uri(), publisher_key)
    archive = registry / entry.location
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert [r.reason for r in updater.pull_once()] == ["digest_mismatch"]
    refused = {**labels, "reason": "digest_mismatch"}
    assert metrics.get_sample_value("edge_agent_bundle_verification_failures_total", refused) == 1
    assert pipeline.activated == ["1.0.0"]
