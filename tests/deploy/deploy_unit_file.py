"""The shipped unit file and a reader for its settings, shared by the deploy tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "edge-agent.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit, by key, in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings
