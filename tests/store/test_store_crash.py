"""Kill a real process at random moments while it installs and activates versions; after
each kill the store must hold an active version that loads and verifies, or none yet, and
never a half-written version."""

from __future__ import annotations

import base64
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bundle_factory import signed_bundle, write_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle.signing import raw_public_bytes
from agent.bundle.trust import TrustStore
from agent.limits import Limits
from agent.store import BundleStore

DRIVER = Path(__file__).with_name("store_crash_driver.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_kill_during_install_and_activate_leaves_a_consistent_store(
    tmp_path: Path, publisher_key: Ed25519PrivateKey, trust: TrustStore
) -> None:
    bundles = tmp_path / "bundles"
    for patch in range(40):
        version = f"1.0.{patch}"
        model = bytes(random.Random(patch).randbytes(20_000))
        write_dir(signed_bundle(publisher_key, version=version, model=model), bundles / version)
    public = tmp_path / "publisher.pub"
    public.write_text(base64.b64encode(raw_public_bytes(publisher_key.public_key())).decode())
    root = tmp_path / "store"
    rng = random.Random(7)
    progress = []
    for _ in range(6):
        process = subprocess.Popen(
            [sys.executable, str(DRIVER), str(root), str(bundles), str(public)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == b"ready"
            # let 1-2 versions complete (so every round moves on, however loaded the
            # machine), then kill at a random moment of the next install
            for _ in range(rng.randint(1, 2)):
                assert process.stdout.readline().startswith(b"activated ")
            time.sleep(rng.uniform(0.0, 0.01))
        finally:
            process.kill()  # always reaped, even when an assertion above failed
            process.wait()
            if process.stdout is not None:
                process.stdout.close()

        store = BundleStore(root, keep_versions=2)  # discards staging leftovers
        assert not list((root / "tmp").iterdir())
        active = store.active_version("sepsis")
        assert active in store.versions("sepsis")
        for version in store.versions("sepsis"):
            store.load("sepsis", trust, Limits(), version=version)
        progress.append(active)
    assert len(set(progress)) >= 3, progress  # the kills landed at different points
