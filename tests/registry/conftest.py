import sys
from pathlib import Path

# The bundle factory (real keys, real manifests) lives with the bundle tests; the TLS
# and misbehaving servers live here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle_factory import publisher_key, trust

__all__ = ["publisher_key", "trust"]
