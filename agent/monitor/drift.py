"""Drift of one value (a model input or output) against the bundle's training reference.

Each window remembers the last N records in a ring buffer of bin indices and keeps one count
per bin, so adding a record is O(1) (count the new record's bin, uncount the evicted one) and
reading a statistic is O(bins). Statistics are computed when read (at scrape time), never per
record. Pure Python on purpose: the agent does not need numpy at run time.

Statistics, as Evidently and NannyML compute them:

- numeric values: Population Stability Index over the reference histogram's bins,
  ``PSI = sum((w_i - r_i) * ln(w_i / r_i))`` where a bin fraction of zero is replaced by
  ``epsilon`` on either side, so an empty bin gives a large but finite term;
- categorical values: Jensen-Shannon distance (base-2, so within [0, 1]) between the window's
  level frequencies and the reference ``category_frequencies``; categories the mapping could
  not place ("unseen") form one extra bucket whose reference share is zero.

Missing values (including values the mapping imputed: the source had none) do not enter the
distributions, whose reference is computed over non-missing training rows; they are counted
apart, and the window's missing ratio is itself a drift signal compared with the reference
missing rate.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

_MISSING = -1
_EMPTY = -2  # a ring slot no record has filled yet


class _Ring:
    """The last ``size`` bucket indices and how many records of each are in it, all
    allocated up front: adding a record overwrites the oldest slot and moves two counts.

    Bucket ``-1`` is a missing value; buckets ``0 .. buckets-1`` are the distribution's bins.
    """

    __slots__ = ("_counts", "_missing", "_next", "_records", "_ring", "_size")

    def __init__(self, size: int, buckets: int) -> None:
        if size < 1:
            raise ValueError("a drift window needs room for at least one record")
        self._size = size
        self._ring = [_EMPTY] * size
        self._next = 0
        self._records = 0
        self._counts = [0] * buckets
        self._missing = 0

    def add(self, bucket: int) -> None:
        slot = self._next
        evicted = self._ring[slot]
        self._ring[slot] = bucket
        self._next = slot + 1 if slot + 1 < self._size else 0
        if evicted >= 0:
            self._counts[evicted] -= 1
        elif evicted == _MISSING:
            self._missing -= 1
        else:
            self._records += 1
        if bucket == _MISSING:
            self._missing += 1
        else:
            self._counts[bucket] += 1

    @property
    def records(self) -> int:
        return self._records

    @property
    def missing(self) -> int:
        return self._missing

    @property
    def counts(self) -> Sequence[int]:
        return self._counts


def psi(window_counts: Sequence[int], reference: Sequence[float], epsilon: float) -> float:
    """Population Stability Index of observed counts against reference fractions.

    Both sides are normalised; a zero fraction becomes ``epsilon`` (Evidently's convention).
    """
    total = sum(window_counts)
    ref_total = sum(reference)
    if total == 0 or ref_total <= 0:
        raise ValueError("PSI needs at least one observed value and a non-empty reference")
    value = 0.0
    for count, ref in zip(window_counts, reference, strict=True):
        w = max(count / total, epsilon)
        r = max(ref / ref_total, epsilon)
        value += (w - r) * math.log(w / r)
    return value


def js_distance(window_counts: Sequence[int], reference: Sequence[float]) -> float:
    """Jensen-Shannon distance (square root of the base-2 divergence), within [0, 1]."""
    total = sum(window_counts)
    ref_total = sum(reference)
    if total == 0 or ref_total <= 0:
        raise ValueError("JS distance needs at least one observed value and a non-empty reference")
    divergence = 0.0
    for count, ref in zip(window_counts, reference, strict=True):
        p = count / total
        q = ref / ref_total
        m = (p + q) / 2
        if p > 0:
            divergence += p * math.log2(p / m) / 2
        if q > 0:
            divergence += q * math.log2(q / m) / 2
    return math.sqrt(max(divergence, 0.0))


class _Window:
    """What both kinds of window count the same way: records, missing ones, their ratio."""

    _ring: _Ring
    _reference: list[float]
    reference_missing_rate: float

    def bins(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """The reference fractions and the window's non-missing values, bin by bin (copies:
        the status page draws them one over the other)."""
        return tuple(self._reference), tuple(self._ring.counts)

    @property
    def records(self) -> int:
        return self._ring.records

    @property
    def observed(self) -> int:
        """Non-missing records in the window: what the statistic is computed over."""
        return self._ring.records - self._ring.missing

    def missing_ratio(self) -> float | None:
        return self._ring.missing / self._ring.records if self._ring.records else None


class NumericWindow(_Window):
    """Sliding-window PSI of a numeric value against a reference histogram.

    A value equal to a bin edge falls in the bin above it (``numpy.searchsorted(edges, v,
    side="right")``), the convention the bundle builder uses when it computes the fractions.
    """

    statistic = "psi"

    def __init__(
        self,
        edges: Sequence[float],
        fractions: Sequence[float],
        *,
        size: int,
        epsilon: float,
        reference_missing_rate: float,
    ) -> None:
        if len(fractions) != len(edges) + 1:
            raise ValueError("a histogram needs len(edges) + 1 fractions")
        self._edges = list(edges)
        self._reference = list(fractions)
        self._epsilon = epsilon
        self._ring = _Ring(size, len(self._reference))
        self.reference_missing_rate = reference_missing_rate

    def add(self, value: float | None) -> None:
        """Count one record; ``None`` (or NaN) is a missing value."""
        if value is None or math.isnan(value):
            self._ring.add(_MISSING)
        else:
            self._ring.add(bisect_right(self._edges, value))

    def value(self) -> float | None:
        """PSI over the window, or None while the window holds no non-missing value."""
        if self._ring.records == self._ring.missing:
            return None
        return psi(self._ring.counts, self._reference, self._epsilon)

    def unseen_ratio(self) -> float | None:
        return None


class CategoricalWindow(_Window):
    """Sliding-window Jensen-Shannon distance of a categorical value against the reference
    category frequencies. Values arrive as level indices (the model's encoding)."""

    statistic = "js"

    def __init__(
        self,
        levels: Sequence[str],
        frequencies: dict[str, float],
        *,
        size: int,
        reference_missing_rate: float,
    ) -> None:
        self._levels = len(levels)
        # One bucket per level, then the "unseen" bucket, whose reference share is zero.
        self._reference = [frequencies.get(level, 0.0) for level in levels] + [0.0]
        self._ring = _Ring(size, self._levels + 1)
        self.reference_missing_rate = reference_missing_rate

    def add(self, level: float | None, *, unseen: bool = False) -> None:
        """Count one record: a level index, an unseen category, or a missing value."""
        if unseen:
            self._ring.add(self._levels)
        elif level is None or math.isnan(level):
            self._ring.add(_MISSING)
        else:
            index = int(level)
            # An index outside the levels cannot come from the mapping; count it as unseen.
            self._ring.add(index if 0 <= index < self._levels else self._levels)

    def value(self) -> float | None:
        if self._ring.records == self._ring.missing:
            return None
        return js_distance(self._ring.counts, self._reference)

    def unseen_ratio(self) -> float | None:
        """Share of non-missing window records whose category the mapping could not place."""
        observed = self.observed
        return self._ring.counts[self._levels] / observed if observed else None


DriftWindow = NumericWindow | CategoricalWindow
