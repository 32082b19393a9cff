"""The ``monitor:`` section of the agent configuration: drift windows and thresholds."""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.configbase import Section


class MonitorConfig(Section):
    """How drift is measured and when it counts as drift.

    The thresholds are the usual ones (Evidently, NannyML, credit-scoring practice): PSI
    under 0.1 is stable, 0.1 to 0.25 is worth watching, above 0.25 calls for action; a
    Jensen-Shannon distance above 0.1 is drift for a categorical value.
    """

    window_records: int = Field(default=500, ge=10, le=1_000_000)
    """Records in each model's sliding drift window (the last N scored records)."""

    min_window_records: int = Field(default=100, ge=1)
    """Drift is not reported for a value until the window holds this many non-missing
    records: with fewer, sampling noise alone pushes PSI over the thresholds."""

    psi_watch: float = Field(default=0.1, gt=0)
    """PSI at or above which a numeric value is in state "watch"."""

    psi_act: float = Field(default=0.25, gt=0)
    """PSI at or above which a numeric value is in state "act"."""

    js_act: float = Field(default=0.1, gt=0, le=1)
    """Jensen-Shannon distance (base 2) at or above which a categorical value is in state
    "act"; half of it is "watch"."""

    psi_epsilon: float = Field(default=1e-4, gt=0, lt=0.01)
    """Fraction that replaces an empty bin (either side) in PSI, so one empty bin gives a
    large but finite term."""

    latency_window: int = Field(default=1000, ge=10, le=1_000_000)
    """Recent requests per model kept to report latency quantiles on the status page."""

    @model_validator(mode="after")
    def _ordered(self) -> MonitorConfig:
        if self.psi_watch >= self.psi_act:
            raise ValueError("psi_watch must be below psi_act")
        if self.min_window_records > self.window_records:
            raise ValueError("min_window_records cannot exceed window_records")
        return self
