"""Building blocks for the typed configuration of every part.

Each part declares its own config section (a ``Section`` subclass) next to its code; the
root ``agent.config.AgentConfig`` composes them. A leaf module.

Paths in a config file are relative to that file's folder: ``load_config`` validates with
``context={"base_dir": <folder>}`` and every ``ConfigPath`` field is resolved against it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, ValidationInfo
from pydantic.functional_validators import AfterValidator


class Section(BaseModel):
    """A config section: unknown keys are errors, values are immutable after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
    path = path.expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return path


ConfigPath = Annotated[Path, AfterValidator(_resolve)]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: listeners bound elsewhere must
    require TLS and authentication."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
