"""Live performance of each served model: predictions kept as they are scored, outcomes
joined as they arrive, and the rolling figures of each version set on the monitor."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from agent.limits import Limits
from agent.performance.config import PerformanceConfig
from agent.performance.live import LiveFigures, live_figures
from agent.performance.store import PredictionStore, load_or_make_key
from agent.types import OutcomeReceipt, OutcomeReport, Prediction

log = logging.getLogger(__name__)

HISTORY_POINTS = 120  # figures kept per version for the status page's chart


class LiveMonitor(Protocol):
    def set_live(self, model: str, version: str, figures: LiveFigures | None) -> None: ...

    def observe_outcomes(self, model: str, joined: int, unmatched: int) -> None: ...

    def predictions_unrecorded(self, count: int) -> None: ...


class PerformanceTracker:
    """See the module docstring. Every method is safe to call from any thread."""

    def __init__(
        self, store: PredictionStore, config: PerformanceConfig, monitor: LiveMonitor
    ) -> None:
        self._store = store
        self._config = config
        self._monitor = monitor
        # (model, version) -> the figures after each batch of outcomes, for the status page
        self._history: dict[tuple[str, str], deque[tuple[str, LiveFigures]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        config: PerformanceConfig,
        state: Path,
        audit_key_file: Path | None,
        monitor: LiveMonitor,
        limits: Limits | None = None,
    ) -> PerformanceTracker:
        """The tracker on ``config.path`` (default ``state/performance.sqlite``)."""
        key_file = config.key_file or audit_key_file or state / "pseudonym.key"
        store = PredictionStore(
            config.path or state / "performance.sqlite",
            load_or_make_key(key_file),
            retention=timedelta(days=config.retention_days),
            max_rows=config.max_predictions,
            horizon=timedelta(hours=config.horizon_hours),
            limits=limits,
            unrecorded=monitor.predictions_unrecorded,
        )
        return cls(store, config, monitor)

    def start(self) -> None:
        """Keep predictions through the store's writer thread (off the request's path)."""
        self._store.start()

    def scored(
        self,
        model: str,
        version: str,
        risk_output: str,
        predictions: Sequence[tuple[str, Prediction]],
    ) -> None:
        """Keep each scored prediction (the caller's reference to the patient, and the
        prediction) until its outcome arrives."""
        rows = [
            (reference, p.as_of, float(p.outputs[risk_output]))
            for reference, p in predictions
            if p.as_of is not None and risk_output in p.outputs
        ]
        self._store.record(model, version, rows)

    def outcomes(
        self, model: str, reports: Sequence[OutcomeReport], thresholds: Mapping[str, float]
    ) -> OutcomeReceipt:
        """Join ``reports`` to earlier predictions, then refresh the model's live figures."""
        joined = sum(self._store.label(model, r.reference, r.time, r.label) > 0 for r in reports)
        self._monitor.observe_outcomes(model, joined, len(reports) - joined)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for version, figures in self.live(model, thresholds).items():
            self._monitor.set_live(model, version, figures)
            if figures is not None:
                with self._lock:
                    history = self._history.setdefault(
                        (model, version), deque(maxlen=HISTORY_POINTS)
                    )
                    history.append((now, figures))
        return OutcomeReceipt(received=len(reports), joined=joined)

    def status(self, model: str, reference_auroc: float | None) -> dict[str, Any]:
        """For the status page: per version, the live figures after each batch of outcomes
        since the agent started (the newest ``HISTORY_POINTS``), beside the publisher's
        AUROC."""
        with self._lock:
            history = {v: list(h) for (m, v), h in self._history.items() if m == model}
        return {
            "reference_auroc": reference_auroc,
            "versions": {
                version: [
                    {
                        "time": time,
                        "labelled": f.labelled,
                        "auroc": f.auroc,
                        "brier": f.brier,
                        "calibration_slope": f.calibration_slope,
                        "ppv": dict(f.ppv),
                    }
                    for time, f in points
                ]
                for version, points in history.items()
            },
        }

    def live(self, model: str, thresholds: Mapping[str, float]) -> dict[str, LiveFigures | None]:
        """Each version's rolling figures now; None where too few predictions are labelled
        (or all with one outcome) to mean anything. Also read by the promotion gates."""
        figures: dict[str, LiveFigures | None] = {}
        for version, pairs in self._store.labelled(model, self._config.window).items():
            enough = (
                len(pairs) >= self._config.min_labelled and len({label for _, label in pairs}) == 2
            )
            figures[version] = live_figures(pairs, thresholds) if enough else None
        return figures

    def stop(self, timeout: float) -> None:
        """Keep what is queued (within ``timeout`` seconds); later predictions are kept by
        the threads that score them."""
        self._store.stop(timeout)

    def close(self) -> None:
        self._store.close()
