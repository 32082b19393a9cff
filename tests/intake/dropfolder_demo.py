"""The repository's demo agent (signed bundle, wasm model, site mapping) set up in a temp
folder, for the tests that run the real ScoringPipeline."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from agent.bundle.archive import read_bundle_dir
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.config import load_config
from agent.store import BundleStore

REPO = Path(__file__).resolve().parents[2]
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


def demo_config(root: Path, drop_folder: dict[str, Any]) -> Path:
    """The repository's demo config (real signed bundle, real site mapping) rooted in
    ``root``, its store holding the installed demo bundle; returns the config file."""
    (root / "config").mkdir(parents=True)
    os.symlink(REPO / "fixtures", root / "fixtures")
    shutil.copytree(REPO / "config" / "mappings", root / "config" / "mappings")
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for section in ("audit", "mllp", "http", "drop_folder"):
        config.pop(section, None)
    config["drop_folder"] = drop_folder
    path = root / "config" / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    limits = loaded.resolved_limits
    files = read_bundle_dir(REPO / "fixtures" / "demo" / "build" / "deterioration", limits)
    verified = verify_bundle(files, TrustStore(loaded.trust), limits=limits)
    store = BundleStore(loaded.store.root)
    store.install(verified)
    store.activate(verified.manifest.name, verified.manifest.version)
    return path


def shifted_to_now(text: str, anchor: datetime) -> str:
    """``text`` with every UTC instant moved so that ``anchor`` becomes now: fixture vitals
    fall inside the mapping's look-back windows whenever the test runs."""
    delta = datetime.now(UTC) - anchor

    def shift(match: re.Match[str]) -> str:
        return (datetime.fromisoformat(match.group()) + delta).isoformat(timespec="seconds")

    return _INSTANT.sub(shift, text)
