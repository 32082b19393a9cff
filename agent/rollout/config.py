"""How a new model version is rolled out at this site: the ``rollout``, ``canary_share``
and ``gates`` keys of a model's config. A leaf (see ADR 0008)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.configbase import Section

RolloutMode = Literal["direct", "shadow", "canary"]
"""``direct``: a verified new version serves at once. ``shadow``: it becomes the model's
candidate and scores every record beside the active version, off the request path, never
answering. ``canary``: it becomes the candidate and answers for ``canary_share`` of the
patients (the others are compared in shadow)."""

Placement = Literal["active", "candidate"]
"""Where a newly installed version went: serving, or staged beside the active version."""


class PromotionGates(Section):
    """What a candidate must show before ``edge-agent models promote`` makes it active
    (``--force --reason`` overrides, recorded in the audit log)."""

    min_records: int = Field(default=1000, ge=0)
    """Records scored by both versions since the agent started comparing them."""

    max_disagreement: float = Field(default=0.05, ge=0, le=1)
    """Largest share of compared records on which the two versions fall on different sides
    of a card threshold (warning or critical), whichever threshold disagrees more."""

    min_days: float = Field(default=7.0, ge=0)
    """Days the candidate must have been staged (kept across restarts)."""

    max_auroc_drop: float | None = Field(default=None, ge=0, le=1)
    """How far the candidate's live AUROC on this site's outcomes may fall below the active
    version's (both from the prediction store, ``performance.enabled``); None: not checked.
    Both versions need enough labelled predictions (``performance.min_labelled``)."""


def placement(mode: RolloutMode, has_active: bool) -> Placement:
    """A model's first version always serves; later ones serve at once only under
    ``direct``."""
    return "candidate" if mode != "direct" and has_active else "active"
