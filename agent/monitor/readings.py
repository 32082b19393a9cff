"""What the metric collectors read at a scrape: the readings the monitor and the pipeline
hand over (drift per window, candidate comparisons, request series) and the preallocated
bins in which the monitor counts each request series between scrapes.

Plain data, kept apart from :mod:`agent.monitor.metrics`, which declares every metric and
exports these at a scrape: the drift windows and the pipeline build readings without
importing the exporters, and nothing here touches Prometheus.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from agent.rollout.comparison import ComparisonReading

# 50 us .. 10 s: a small model scores in well under a millisecond, a large FHIR Bundle with
# many look-back reductions may take seconds; the request deadline is 10 s.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

STAGES = ("mapping", "inference", "total")

Target = Literal["feature", "output"]
Statistic = Literal["psi", "js"]


@dataclass(frozen=True)
class DriftReading:
    """One value's drift, as read from its window at scrape time."""

    model: str
    target: Target
    name: str  # the feature or output name, from the signed manifest
    statistic: Statistic
    value: float | None  # None: too few records in the window yet
    missing_ratio: float | None  # features only
    reference_missing_ratio: float | None  # features only
    unseen_ratio: float | None  # categorical features only


@dataclass(frozen=True)
class WindowReading:
    model: str
    records: int


class LatencyBins:
    """One latency histogram: a count per bucket of ``LATENCY_BUCKETS`` (and +Inf) and the
    sum, allocated once, so an observation is a bisect and two additions (the client's
    ``Histogram.observe`` takes two locks besides). Not thread-safe: the monitor updates
    and reads it under its own lock."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds


class RequestSeries:
    """The request metrics of one (model, version, intake), allocated when it first
    appears: latency by stage and predictions returned."""

    __slots__ = ("created", "inference", "labels", "mapping", "predictions", "total")

    def __init__(self, model: str, version: str, intake: str) -> None:
        self.labels = (model, version, intake)
        self.created = time.time()
        self.mapping = LatencyBins()
        self.inference = LatencyBins()
        self.total = LatencyBins()
        self.predictions = 0

    def observe(self, mapping: float, inference: float, total: float) -> None:
        self.mapping.observe(mapping)
        self.inference.observe(inference)
        self.total.observe(total)
        self.predictions += 1

    def reading(self) -> RequestReading:
        """A copy to export, taken under the monitor's lock."""
        stages = (self.mapping, self.inference, self.total)
        return RequestReading(
            self.labels,
            self.created,
            tuple((tuple(b.counts), b.sum) for b in stages),
            self.predictions,
        )


@dataclass(frozen=True)
class RequestReading:
    labels: tuple[str, str, str]  # model, version, intake
    created: float
    stages: tuple[tuple[tuple[int, ...], float], ...]  # per STAGES: bucket counts, sum
    predictions: int


@dataclass(frozen=True)
class CandidateReading:
    """A model's staged candidate and its comparison with the active version."""

    model: str
    version: str
    digest: str
    keyid: str
    mode: Literal["shadow", "canary"]
    since: datetime
    canary_share: float  # 0 in shadow mode
    comparison: ComparisonReading
