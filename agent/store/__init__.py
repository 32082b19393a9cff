"""The bundle store: verified bundles on disk, versioned, with an atomic active version."""

from agent.store.bundle_store import BundleStore
from agent.store.config import StoreConfig

__all__ = ["BundleStore", "StoreConfig"]
