"""The ``performance:`` section of the agent config. A leaf."""

from __future__ import annotations

from pydantic import Field

from agent.configbase import ConfigPath, Section


class PerformanceConfig(Section):
    """Live performance: predictions kept (pseudonymised) until their outcomes arrive."""

    enabled: bool = False
    """Keep each scored prediction in the local prediction store and accept outcomes."""

    path: ConfigPath | None = None
    """The SQLite prediction store; None: ``<store root>/state/performance.sqlite``."""

    key_file: ConfigPath | None = None
    """Site secret the patient reference is HMAC'd with (the store never holds the
    reference itself); None: the audit log's key, else a key the agent makes once in
    ``<store root>/state/pseudonym.key`` (0600)."""

    horizon_hours: float = Field(default=48.0, gt=0)
    """An outcome labels the patient's predictions made within this many hours before it
    (an ICU transfer within 48 h of the score)."""

    retention_days: float = Field(default=90.0, gt=0)
    """Predictions older than this are deleted, labelled or not."""

    max_predictions: int = Field(default=1_000_000, ge=1_000)
    """At most this many predictions are kept; the oldest go first."""

    window: int = Field(default=1_000, ge=10)
    """The live figures use each version's newest this-many labelled predictions."""

    min_labelled: int = Field(default=30, ge=2)
    """Below this many labelled predictions (or without both outcomes) a version's live
    figures are not exported: too few to mean anything."""
