"""The mapping tests' model: the demo ``deterioration`` input schema with training medians,
built in the tests (mapping_builders) so they need no compiled bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mapping_builders import manifest_document

from agent.bundle.manifest import BundleManifest


@pytest.fixture
def manifest() -> BundleManifest:
    return BundleManifest.model_validate(manifest_document())
