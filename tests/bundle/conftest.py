import sys
from pathlib import Path

# The bundle factory (real keys, real manifests) is shared with tests/store and tests/registry.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle_factory import publisher_key, trust

__all__ = ["publisher_key", "trust"]
