"""The monitor: what the pipeline and the bundle updater report, turned into metrics and drift.

``Monitor`` is the one object other parts call. It owns the metric objects (declared in
:mod:`agent.monitor.metrics`), each model's drift windows (:mod:`agent.monitor.model_drift`)
and a short latency history for the status page. All methods are thread-safe: the pipeline runs in
worker threads for MLLP and the drop folder, in the event loop for HTTP.

Label values are checked here so that nothing a caller sends can create a series: model names
must be configured (or registered) models, else they are counted as ``unknown``; reasons must
be the ``reason`` slug of an :class:`agent.errors.AgentError` class, else ``other``; versions
must look like MAJOR.MINOR.PATCH; feature and output names come from the signed manifest.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter

from agent import __version__
from agent.bundle.manifest import BundleManifest
from agent.errors import AgentError, BundleError
from agent.monitor.config import MonitorConfig
from agent.monitor.drift import CategoricalWindow, DriftWindow
from agent.monitor.metrics import AgentMetrics
from agent.monitor.model_drift import ModelDrift
from agent.monitor.readings import (
    CandidateReading,
    DriftReading,
    RequestReading,
    RequestSeries,
    WindowReading,
)
from agent.types import FeatureHistogram, FeatureVector, IntakePath

if TYPE_CHECKING:
    from agent.performance.live import LiveFigures

UNKNOWN_MODEL = "unknown"
OTHER_REASON = "other"
INTERNAL_REASON = "internal"  # an unexpected exception (a bug), not an AgentError
PullOutcome = Literal["updated", "current", "failed"]
_PULL_OUTCOMES = ("updated", "current", "failed")
_VERSION = re.compile(r"^\d{1,9}\.\d{1,9}\.\d{1,9}$")


def _reasons(base: type[AgentError]) -> frozenset[str]:
    """Every reason slug of ``base`` and its subclasses: the closed set of label values."""
    found = {base.reason}
    stack = list(base.__subclasses__())
    while stack:
        cls = stack.pop()
        found.add(cls.reason)
        stack.extend(cls.__subclasses__())
    return frozenset(found)


@dataclass(frozen=True)
class _Series:
    """What one prediction of (model, version, intake) updates: looked up once, not per
    record."""

    request: RequestSeries
    requests: Counter


class _LazyChild:
    """A counter's child for one label set, resolved at its first increment and kept: the
    series appears only once it counts something, and later increments skip ``labels()``
    (a lock, a tuple and a lookup per call)."""

    __slots__ = ("_child", "_counter", "_labels")

    def __init__(self, counter: Counter, *labels: str) -> None:
        self._counter = counter
        self._labels = labels
        self._child: Counter | None = None

    def inc(self) -> None:
        child = self._child
        if child is None:
            child = self._child = self._counter.labels(*self._labels)
        child.inc()


@dataclass(frozen=True, slots=True)
class _FeatureSlot:
    """What one record's value of a feature updates, prepared when the model registers."""

    window: DriftWindow | None
    missing: _LazyChild
    imputed: _LazyChild
    out_of_range: _LazyChild
    unseen: _LazyChild


@dataclass
class _ModelState:
    version: str
    digest: str
    keyid: str
    slots: dict[str, _FeatureSlot]  # by feature name, every input of the manifest
    drift: ModelDrift


@dataclass
class _ModelTotals:
    """Counts kept for the status page (Prometheus keeps its own)."""

    predictions: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: deque[float] = field(default_factory=deque)


class Monitor:
    """Metrics and drift for every model the agent serves.

    ``models`` are the model names in the agent's configuration: they are valid label values
    before their first bundle is registered (a first pull may fail). ``register_model`` adds
    the model it registers.
    """

    def __init__(
        self, registry: CollectorRegistry, config: MonitorConfig, models: Iterable[str] = ()
    ) -> None:
        self.registry = registry
        self._config = config
        self._lock = threading.Lock()
        self._known: set[str] = set(models)
        self._states: dict[str, _ModelState] = {}
        self._totals: dict[str, _ModelTotals] = {}
        self._series_cache: dict[tuple[str, str, IntakePath], _Series] = {}
        self._reasons = _reasons(AgentError) | {INTERNAL_REASON}
        self._verification_reasons = _reasons(BundleError)
        self._candidates: Callable[[], Iterable[CandidateReading]] = list
        self._requests: dict[tuple[str, str, str], RequestSeries] = {}
        self._metrics = AgentMetrics(
            registry, self._drift_readings, lambda: self._candidates(), self._request_readings
        )
        self._metrics.build_info.labels(version=__version__).set(1)

    # --- what other parts report ----------------------------------------------------------
    def register_model(self, manifest: BundleManifest, digest: str, keyid: str) -> None:
        """Make ``manifest`` the active version of its model: set the active-version gauge
        (removing the previous version's series) and start fresh drift windows against the
        manifest's reference. Called at load and again at every swap or rollback."""
        drift = ModelDrift(manifest, self._config)
        m, name = self._metrics, manifest.name
        slots = {
            f: _FeatureSlot(
                window=drift.features.get(f),
                missing=_LazyChild(m.feature_missing, name, f),
                imputed=_LazyChild(m.feature_imputed, name, f),
                out_of_range=_LazyChild(m.feature_out_of_range, name, f),
                unseen=_LazyChild(m.feature_unseen_category, name, f),
            )
            for f in manifest.feature_names()
        }
        state = _ModelState(
            version=manifest.version,
            digest=digest,
            keyid=keyid,
            slots=slots,
            drift=drift,
        )
        with self._lock:
            old = self._states.get(manifest.name)
            if old is not None:
                self._metrics.model_active.remove(manifest.name, old.version, old.keyid)
            self._states[manifest.name] = state
            self._known.add(manifest.name)
            published = reference_auroc(manifest.provenance.metrics)
            if published is not None:
                self._metrics.reference_auroc.labels(manifest.name, manifest.version).set(published)
            self._metrics.model_active.labels(
                model=manifest.name, version=manifest.version, keyid=keyid
            ).set(1)

    def watch_candidates(self, read: Callable[[], Iterable[CandidateReading]]) -> None:
        """Where the candidate metrics are read from at each scrape (the pipeline's staged
        candidates and their comparisons)."""
        self._candidates = read

    def unregister_model(self, name: str) -> None:
        """``name`` serves no version any more (none verifies): drop its active-version
        series and drift windows, so /metrics does not claim a version that is not served."""
        with self._lock:
            old = self._states.pop(name, None)
            if old is not None:
                self._metrics.model_active.remove(name, old.version, old.keyid)

    def set_live(self, model: str, version: str, figures: LiveFigures | None) -> None:
        """A version's rolling figures on this site's outcomes; None removes them (too few
        labelled predictions to mean anything)."""
        name = self._model_label(model)
        gauges = (
            self._metrics.live_labelled,
            self._metrics.live_auroc,
            self._metrics.live_brier,
            self._metrics.live_calibration_slope,
        )
        with self._lock:
            if figures is None:
                for gauge in gauges:
                    with contextlib.suppress(KeyError):
                        gauge.remove(name, version)
                return
            values = (figures.labelled, figures.auroc, figures.brier, figures.calibration_slope)
            for gauge, value in zip(gauges, values, strict=True):
                if value is None:
                    with contextlib.suppress(KeyError):
                        gauge.remove(name, version)
                else:
                    gauge.labels(name, version).set(value)
            for threshold, ppv in figures.ppv.items():
                if ppv is not None:
                    self._metrics.live_ppv.labels(name, version, threshold).set(ppv)

    def observe_outcomes(self, model: str, joined: int, unmatched: int) -> None:
        """Outcomes received: ``joined`` labelled an earlier prediction, ``unmatched`` did
        not (no prediction of that patient within the horizon)."""
        name = self._model_label(model)
        with self._lock:
            self._metrics.outcomes.labels(name, "joined").inc(joined)
            self._metrics.outcomes.labels(name, "unmatched").inc(unmatched)

    def predictions_unrecorded(self, count: int) -> None:
        """Predictions the prediction store could not keep (its queue full, a failed
        insert)."""
        self._metrics.predictions_unrecorded.inc(count)

    def observe_deactivation(self, model: str, reason: str) -> None:
        """Count a version taken out of service (at start, at a reload, at a load);
        ``reason`` is the error's slug (``untrusted_key``, ``digest_mismatch``, ...)."""
        with self._lock:
            slug = reason if reason in self._reasons else OTHER_REASON
            self._metrics.model_deactivations.labels(self._model_label(model), slug).inc()

    def observe(
        self,
        model: str,
        version: str,
        intake: IntakePath,
        vector: FeatureVector,
        outputs: Mapping[str, float],
        mapping_seconds: float,
        inference_seconds: float,
        total_seconds: float,
    ) -> None:
        """Record one prediction: latency by stage, feature quality counters, and the drift
        windows (only for predictions made by the model's active version, whose reference the
        windows hold). Constant work per feature: every counter child and window was
        prepared when the model registered, each window adds a record in O(1)."""
        with self._lock:
            name = self._model_label(model)
            series = self._series(name, version, intake)
            series.request.observe(mapping_seconds, inference_seconds, total_seconds)
            series.requests.inc()
            totals = self._totals_of(name)
            totals.predictions += 1
            totals.latencies.append(total_seconds)
            state = self._states.get(name)
            if state is None:
                return
            active = version == state.version
            slots = state.slots
            for fv in vector.features:
                slot = slots.get(fv.name)
                if slot is None:
                    continue
                value = fv.value
                if fv.unseen_category:  # data that arrived, not missing data
                    slot.unseen.inc()
                elif value is None or fv.imputed:
                    slot.missing.inc()
                    value = None
                if fv.imputed:
                    slot.imputed.inc()
                if fv.out_of_range:
                    slot.out_of_range.inc()
                window = slot.window
                if not active or window is None:
                    continue
                if isinstance(window, CategoricalWindow):
                    window.add(value, unseen=fv.unseen_category)
                else:
                    window.add(value)
            if active:
                state.drift.add_outputs(outputs)

    def observe_error(self, model: str, intake: IntakePath, reason: str) -> None:
        """Record one failed scoring attempt. ``reason`` is ``AgentError.reason`` (or
        ``"internal"`` for an unexpected exception); anything else is counted as ``other``."""
        with self._lock:
            name = self._model_label(model)
            reason_label = reason if reason in self._reasons else OTHER_REASON
            intake_label = IntakePath(intake).value
            self._metrics.requests.labels(name, intake_label).inc()
            self._metrics.errors.labels(name, intake_label, reason_label).inc()
            errors = self._totals_of(name).errors
            errors[reason_label] = errors.get(reason_label, 0) + 1

    def observe_pull(
        self, model: str, registry: str, outcome: PullOutcome, reason: str | None = None
    ) -> None:
        """Record one pull from a configured registry (``registry`` is its configured name).

        ``outcome``: ``updated`` (a new version verified and installed), ``current`` (nothing
        newer) or ``failed`` with ``reason`` the error's slug; a reason from the bundle-trust
        family (signature, digest_mismatch, rollback...) counts as a verification failure,
        any other as a pull failure.
        """
        if outcome not in _PULL_OUTCOMES:
            raise ValueError(f"pull outcome must be one of {_PULL_OUTCOMES}")
        m = self._metrics
        with self._lock:
            name = self._model_label(model)
            m.bundle_pulls.labels(name, registry).inc()
            if outcome == "failed":
                slug = reason if reason in self._reasons else OTHER_REASON
                failures = (
                    m.bundle_verification_failures
                    if slug in self._verification_reasons
                    else m.bundle_pull_failures
                )
                failures.labels(name, registry, slug).inc()
                return
            if outcome == "updated":
                m.bundle_updates.labels(name, registry).inc()
            m.bundle_last_success.labels(name, registry).set(time.time())

    # --- what the status page reads -------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Per-model state for the status page: active version, counts, latency quantiles
        (over the last ``latency_window`` predictions) and each value's drift with its state
        ("ok", "watch", "act", or "insufficient" while the window is too small)."""
        with self._lock:
            models: dict[str, Any] = {}
            for name in sorted(set(self._states) | set(self._totals)):
                totals = self._totals.get(name, _ModelTotals())
                entry: dict[str, Any] = {
                    "predictions": totals.predictions,
                    "errors": dict(sorted(totals.errors.items())),
                    "latency_seconds": _quantiles(totals.latencies),
                }
                state = self._states.get(name)
                if state is not None:
                    entry.update(
                        version=state.version,
                        digest=state.digest,
                        keyid=state.keyid,
                        window_records=state.drift.window_records,
                        **state.drift.entries(),
                    )
                models[name] = entry
            return {"models": models}

    def histograms(self, manifest: BundleManifest) -> list[FeatureHistogram]:
        """Each input feature's reference and live bins, with its drift, for the status
        page; none unless ``manifest`` is the version whose reference the windows hold."""
        with self._lock:
            state = self._states.get(manifest.name)
            if state is None or state.version != manifest.version:
                return []
            return state.drift.histograms(manifest)

    # --- internals ------------------------------------------------------------------------
    def _series(self, name: str, version: str, intake: IntakePath) -> _Series:
        """Cached children for ``name`` (already a checked label), ``version`` and ``intake``;
        a version that is not MAJOR.MINOR.PATCH is labelled ``unknown``."""
        key = (name, version, intake)
        series = self._series_cache.get(key)
        if series is None:
            version_label = version if _VERSION.match(version) else UNKNOWN_MODEL
            intake_label = IntakePath(intake).value
            labels = (name, version_label, intake_label)
            request = self._requests.get(labels)
            if request is None:
                request = self._requests[labels] = RequestSeries(*labels)
            series = _Series(request, self._metrics.requests.labels(name, intake_label))
            self._series_cache[key] = series
        return series

    def _model_label(self, model: str) -> str:
        return model if model in self._known else UNKNOWN_MODEL

    def _totals_of(self, name: str) -> _ModelTotals:
        totals = self._totals.get(name)
        if totals is None:
            totals = _ModelTotals(latencies=deque(maxlen=self._config.latency_window))
            self._totals[name] = totals
        return totals

    def _request_readings(self) -> list[RequestReading]:
        with self._lock:
            return [series.reading() for series in self._requests.values()]

    def _drift_readings(self) -> tuple[list[DriftReading], list[WindowReading]]:
        readings: list[DriftReading] = []
        windows: list[WindowReading] = []
        with self._lock:
            for name, state in self._states.items():
                windows.append(WindowReading(name, state.drift.window_records))
                readings.extend(state.drift.readings(name))
        return readings, windows


def _quantiles(samples: Iterable[float]) -> dict[str, float | None]:
    """p50/p95/p99 by nearest rank; None when nothing was observed yet."""
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p95": None, "p99": None}
    last = len(ordered) - 1
    return {
        f"p{q}": ordered[min(last, max(0, round(q / 100 * len(ordered)) - 1))] for q in (50, 95, 99)
    }


def reference_auroc(metrics: Mapping[str, float]) -> float | None:
    """The AUROC a publisher reports in the manifest (``holdout_auroc``, ``validation_auroc``
    or ``auroc``, in that order), the figure live performance is compared with."""
    for key in ("holdout_auroc", "validation_auroc", "auroc"):
        if key in metrics:
            return float(metrics[key])
    return None
