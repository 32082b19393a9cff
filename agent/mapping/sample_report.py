"""A site mapping tried on a sample of the site's own records before go-live: per feature,
how often it was found, converted, out of range, outside its window (and how far), imputed
or refused. A site learns here that its feed lacks a vital sign, not from a constant score
after go-live. Counts only: nothing from a record is kept or printed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from statistics import median

from agent.mapping.feature import FeatureSurvey


@dataclass
class FeatureTally:
    records: int = 0
    found: int = 0
    converted: int = 0
    out_of_range: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # read, imputed, refusal reasons
    hours_beyond: list[float] = field(default_factory=list)

    def add(self, seen: FeatureSurvey) -> None:
        self.records += 1
        self.found += seen.found
        self.converted += seen.converted
        self.out_of_range += seen.out_of_range or seen.outcome == "out_of_range"
        self.outcomes[seen.outcome] += 1
        if seen.hours_beyond_window is not None:
            self.hours_beyond.append(seen.hours_beyond_window)


class SampleReport:
    """Tallies per feature, in the model's order, over every record surveyed."""

    def __init__(self, features: list[str]) -> None:
        self.tallies = {name: FeatureTally() for name in features}
        self.records = 0

    def add(self, record: list[FeatureSurvey]) -> None:
        self.records += 1
        for seen in record:
            self.tallies[seen.name].add(seen)

    def never_found(self) -> list[str]:
        return [name for name, tally in self.tallies.items() if self.records and not tally.found]

    def lines(self) -> list[str]:
        head = (
            "feature",
            "found",
            "converted",
            "out of range",
            "outside window",
            "imputed",
            "refused",
        )
        rows = [head]
        for name, t in self.tallies.items():
            outside = f"{len(t.hours_beyond)}"
            if t.hours_beyond:
                outside += f" (median {median(t.hours_beyond):.0f} h late)"
            refused = {k: v for k, v in t.outcomes.items() if k not in ("read", "imputed")}
            rows.append(
                (
                    name,
                    _share(t.found, t.records),
                    _share(t.converted, t.records),
                    _share(t.out_of_range, t.records),
                    outside,
                    _share(t.outcomes["imputed"], t.records),
                    ", ".join(f"{k} {v}" for k, v in sorted(refused.items())) or "0",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [f"sample: {self.records} patient record(s)"]
        lines += [
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines += [
            f"  warning: {name} was never found in the sample: the site's feed may lack it"
            for name in self.never_found()
        ]
        return lines


def _share(count: int, total: int) -> str:
    return f"{count}/{total}" if total else "0"
