"""Installs and activates bundles in a loop until killed: the crash tests' victim.

    python store_crash_driver.py STORE_ROOT BUNDLES_DIR PUBLIC_KEY_FILE

BUNDLES_DIR holds one signed bundle directory per version, named by version. Each run
goes on from the highest version installed so far. Prints "ready" once, before its first
install, and "activated VERSION" after each, so the test can place its kill.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.bundle.archive import read_bundle_dir
from agent.bundle.manifest import SemVer
from agent.bundle.signing import load_public_key
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.limits import Limits
from agent.store import BundleStore


def main(root: Path, bundles: Path, public_key: Path) -> None:
    store = BundleStore(root, keep_versions=2)
    trust = TrustStore.of(load_public_key(public_key))
    limits = Limits()
    highest = store.highest_installed("sepsis")
    print("ready", flush=True)
    for folder in sorted(bundles.iterdir(), key=lambda p: SemVer(p.name)):
        if highest is not None and SemVer(folder.name) <= SemVer(highest):
            continue
        verified = verify_bundle(read_bundle_dir(folder, limits), trust, limits=limits)
        store.install(verified)
        store.activate(verified.manifest.name, verified.manifest.version)
        print(f"activated {verified.manifest.version}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
