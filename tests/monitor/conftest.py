"""Fixtures: a fresh registry per test and a monitor serving the reference model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from agent.monitor import Monitor, MonitorConfig
from tests.monitor.monitor_reference import Population, build_manifest


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def monitor(registry: CollectorRegistry) -> Monitor:
    m = Monitor(registry, MonitorConfig(window_records=500, min_window_records=100), ["sepsis"])
    m.register_model(build_manifest(), "a" * 64, "publisher-2026")
    return m


@pytest.fixture
def population() -> Callable[[int], Population]:
    return lambda seed: Population(np.random.default_rng(seed))
