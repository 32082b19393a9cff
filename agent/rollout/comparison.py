"""The running comparison of a candidate version with the active one, per model.

Every record both versions scored adds one pair of risk scores (``risk_output`` of each)
and each version's per-record latency. Counts, the correlation (Welford's co-moments, exact
over every pair) and label agreement cover every pair since comparing began; quantiles, the
PSI and the histograms are read over the last ``window`` pairs, so memory stays bounded.
Everything is computed when read (a scrape, the status page, ``models compare``), not per
record. Only numbers: no record, reference or identifier is kept.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.monitor.drift import psi

Role = Literal["active", "candidate"]
ROLES: tuple[Role, ...] = ("active", "candidate")
SkipReason = Literal["queue_full", "refused", "error"]
SKIP_REASONS: tuple[SkipReason, ...] = ("queue_full", "refused", "error")
PSI_BINS = 10  # deciles of the active version's scores
HISTOGRAM_BINS = 10  # equal-width bins for the status page


@dataclass(frozen=True)
class ComparisonReading:
    """One reading of a comparison. A statistic is None until there is enough to say."""

    records: int
    correlation: float | None
    mean_abs_difference: float | None
    p99_abs_difference: float | None
    agreement: Mapping[str, float | None]  # card threshold name -> share on the same side
    psi: float | None
    latency_seconds: Mapping[Role, Mapping[str, float | None]]  # role -> p50, p99
    skipped: Mapping[SkipReason, int]
    histogram_edges: Sequence[float] = ()
    histograms: Mapping[Role, Sequence[int]] = field(default_factory=dict)

    @property
    def disagreement(self) -> float | None:
        """The largest share of records on opposite sides of any one card threshold."""
        shares = [a for a in self.agreement.values() if a is not None]
        return 1.0 - min(shares) if shares else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "correlation": self.correlation,
            "mean_abs_difference": self.mean_abs_difference,
            "p99_abs_difference": self.p99_abs_difference,
            "agreement": dict(self.agreement),
            "disagreement": self.disagreement,
            "psi": self.psi,
            "latency_seconds": {k: dict(v) for k, v in self.latency_seconds.items()},
            "skipped": dict(self.skipped),
            "histogram_edges": list(self.histogram_edges),
            "histograms": {k: list(v) for k, v in self.histograms.items()},
        }


class Comparison:
    """Pairs of scores from the active and the candidate version (thread-safe).

    ``thresholds``: the model's card thresholds by name; ``min_records``: pairs in the
    window before the PSI is reported (sampling noise alone moves it on fewer)."""

    def __init__(
        self,
        thresholds: Mapping[str, float],
        *,
        window: int,
        min_records: int,
        epsilon: float,
    ) -> None:
        self._thresholds = dict(thresholds)
        self._min_records = min_records
        self._epsilon = epsilon
        self._lock = threading.Lock()
        self._records = 0
        self._mean_a = self._mean_c = 0.0
        self._m2_a = self._m2_c = self._co = 0.0
        self._abs_sum = 0.0
        self._agree = dict.fromkeys(self._thresholds, 0)
        self._pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self._latency: dict[Role, deque[float]] = {
            "active": deque(maxlen=window),
            "candidate": deque(maxlen=window),
        }
        self._skipped: dict[SkipReason, int] = dict.fromkeys(SKIP_REASONS, 0)

    def add(self, active: float, candidate: float, active_s: float, candidate_s: float) -> None:
        """One record scored by both versions; non-finite scores are counted as refused."""
        if not (math.isfinite(active) and math.isfinite(candidate)):
            self.skip("refused")
            return
        with self._lock:
            self._records += 1
            n = self._records
            da = active - self._mean_a
            self._mean_a += da / n
            dc = candidate - self._mean_c
            self._mean_c += dc / n
            self._m2_a += da * (active - self._mean_a)
            self._m2_c += dc * (candidate - self._mean_c)
            self._co += da * (candidate - self._mean_c)
            self._abs_sum += abs(active - candidate)
            for name, threshold in self._thresholds.items():
                if (active >= threshold) == (candidate >= threshold):
                    self._agree[name] += 1
            self._pairs.append((active, candidate))
            self._latency["active"].append(active_s)
            self._latency["candidate"].append(candidate_s)

    def skip(self, reason: SkipReason, count: int = 1) -> None:
        """Records the candidate could not be compared on (never a failed answer)."""
        with self._lock:
            self._skipped[reason] += count

    def state(self) -> dict[str, Any]:
        """Everything the comparison holds, as JSON values: kept on disk so that a restart
        resumes the evidence a candidate has gathered instead of starting again (``resume``).
        """
        with self._lock:
            return {
                "records": self._records,
                "moments": [
                    self._mean_a,
                    self._mean_c,
                    self._m2_a,
                    self._m2_c,
                    self._co,
                    self._abs_sum,
                ],
                "agree": dict(self._agree),
                "pairs": [list(pair) for pair in self._pairs],
                "latency": {role: list(values) for role, values in self._latency.items()},
                "skipped": dict(self._skipped),
            }

    def resume(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (what ``state`` gave, for the same card thresholds);
        ValueError, with nothing changed, when it is not such a state."""
        try:
            records = _count(state["records"])
            moments = [_finite(m) for m in state["moments"]]
            agree = {str(k): _count(v) for k, v in state["agree"].items()}
            pairs = [(_finite(a), _finite(c)) for a, c in state["pairs"]]
            latency = {
                r: [_finite(v) for v in state["latency"][r]] for r in ("active", "candidate")
            }
            skipped = {r: _count(state["skipped"][r]) for r in SKIP_REASONS}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError("not a comparison state") from exc
        if len(moments) != 6 or agree.keys() != self._agree.keys():
            raise ValueError("not a comparison state for these thresholds")
        with self._lock:
            self._records = records
            self._mean_a, self._mean_c, self._m2_a, self._m2_c, self._co, self._abs_sum = moments
            self._agree = agree
            self._pairs.clear()
            self._pairs.extend(pairs)
            for role in ROLES:
                values = latency[role]
                self._latency[role].clear()
                self._latency[role].extend(values)
            self._skipped = skipped

    def read(self) -> ComparisonReading:
        with self._lock:
            n = self._records
            pairs = list(self._pairs)
            latency = {role: sorted(values) for role, values in self._latency.items()}
            agree = dict(self._agree)
            spread = self._m2_a * self._m2_c
            correlation = self._co / math.sqrt(spread) if n >= 2 and spread > 0 else None
            mean_abs = self._abs_sum / n if n else None
            skipped = dict(self._skipped)
        differences = sorted(abs(a - c) for a, c in pairs)
        edges, histograms = _histograms(pairs)
        return ComparisonReading(
            records=n,
            correlation=correlation,
            mean_abs_difference=mean_abs,
            p99_abs_difference=_quantile(differences, 0.99),
            agreement={name: (count / n if n else None) for name, count in agree.items()},
            psi=self._psi(pairs),
            latency_seconds={
                role: {"p50": _quantile(values, 0.5), "p99": _quantile(values, 0.99)}
                for role, values in latency.items()
            },
            skipped=skipped,
            histogram_edges=edges,
            histograms=histograms,
        )

    def _psi(self, pairs: Sequence[tuple[float, float]]) -> float | None:
        """PSI of the candidate's scores against the active's, over the deciles of the
        active's scores in the window."""
        if len(pairs) < self._min_records:
            return None
        active = sorted(a for a, _ in pairs)
        cuts = sorted({active[len(active) * i // PSI_BINS] for i in range(1, PSI_BINS)})
        reference = [0] * (len(cuts) + 1)
        observed = [0] * (len(cuts) + 1)
        for a, c in pairs:
            reference[bisect_right(cuts, a)] += 1
            observed[bisect_right(cuts, c)] += 1
        return psi(observed, reference, self._epsilon)


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("not a count")
    return value


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not a finite number")
    return float(value)


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile of an ascending sequence."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _histograms(
    pairs: Sequence[tuple[float, float]],
) -> tuple[list[float], dict[Role, list[int]]]:
    """Both versions' scores over the same equal-width bins, for drawing side by side."""
    if not pairs:
        return [], {}
    low = min(min(a, c) for a, c in pairs)
    high = max(max(a, c) for a, c in pairs)
    width = (high - low) / HISTOGRAM_BINS or 1.0
    edges = [low + width * i for i in range(HISTOGRAM_BINS + 1)]
    counts: dict[Role, list[int]] = {
        "active": [0] * HISTOGRAM_BINS,
        "candidate": [0] * HISTOGRAM_BINS,
    }
    for a, c in pairs:
        counts["active"][min(HISTOGRAM_BINS - 1, int((a - low) / width))] += 1
        counts["candidate"][min(HISTOGRAM_BINS - 1, int((c - low) / width))] += 1
    return edges, counts
