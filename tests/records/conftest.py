"""Shared helpers for the records tests: the fixture folders and default limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.limits import Limits

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def limits() -> Limits:
    return Limits()
