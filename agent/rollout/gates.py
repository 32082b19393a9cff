"""Promotion gates: whether a candidate has earned its place, each gate named with what it
saw, so a refused ``models promote`` says which gate failed and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agent.rollout.comparison import ComparisonReading
from agent.rollout.config import PromotionGates

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class GateResult:
    name: str  # min_records, max_disagreement, min_days
    passed: bool
    detail: str  # what was seen against what is required; numbers only

    def line(self) -> str:
        return f"{'pass' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@dataclass(frozen=True)
class LiveAuroc:
    """Each version's live AUROC on this site's outcomes (None: not enough outcomes yet)."""

    active: float | None
    candidate: float | None


def evaluate(
    gates: PromotionGates,
    reading: ComparisonReading,
    since: datetime,
    now: datetime,
    live: LiveAuroc | None = None,
) -> list[GateResult]:
    """Every configured gate, passed or not (a promotion needs all of them)."""
    days = (now - since).total_seconds() / SECONDS_PER_DAY
    disagreement = reading.disagreement
    results = [
        GateResult(
            "min_records",
            reading.records >= gates.min_records,
            f"{reading.records} compared, {gates.min_records} required",
        ),
        GateResult(
            "max_disagreement",
            disagreement is not None and disagreement <= gates.max_disagreement,
            "no records compared yet"
            if disagreement is None
            else f"{disagreement:.4f} disagree at a card threshold, at most "
            f"{gates.max_disagreement:.4f} allowed",
        ),
        GateResult(
            "min_days",
            days >= gates.min_days,
            f"staged {days:.2f} days, {gates.min_days:g} required",
        ),
    ]
    if gates.max_auroc_drop is not None:
        results.append(_auroc_gate(gates.max_auroc_drop, live or LiveAuroc(None, None)))
    return results


def _auroc_gate(margin: float, live: LiveAuroc) -> GateResult:
    if live.active is None or live.candidate is None:
        return GateResult(
            "max_auroc_drop", False, "not enough labelled outcomes for both versions yet"
        )
    drop = live.active - live.candidate
    return GateResult(
        "max_auroc_drop",
        drop <= margin,
        f"live AUROC active {live.active:.4f}, candidate {live.candidate:.4f}: a drop of "
        f"{max(drop, 0.0):.4f}, at most {margin:.4f} allowed",
    )
