"""The ``store:`` config section: where verified bundles live on disk."""

from __future__ import annotations

from pydantic import Field

from agent.configbase import ConfigPath, Section


class StoreConfig(Section):
    root: ConfigPath
    """Folder of the bundle store (versions, active pointers, registry state); relative to
    the config file. Give the agent's service user write access to it and no one else."""

    keep_versions: int = Field(default=3, ge=1, le=100)
    """Installed versions kept per model for instant rollback (the active one is always
    kept, even when older)."""
