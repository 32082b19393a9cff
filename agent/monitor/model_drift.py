"""The drift of one served model version: a window per input and output, built from the
manifest's training reference, and what the windows say (the status page's drift entries
and histograms, the readings exported at each scrape), judged against the configured
thresholds.

Apart from ``agent.monitor.monitor`` so that the monitor reads as what callers report and
how it is labelled and counted, while this module holds the windows and their judgement.
Not thread-safe on its own: the monitor calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.bundle.manifest import BundleManifest, OutputKind, ValueReference
from agent.monitor.config import MonitorConfig
from agent.monitor.drift import CategoricalWindow, DriftWindow, NumericWindow
from agent.monitor.readings import DriftReading, Target
from agent.types import FeatureHistogram


class ModelDrift:
    """The drift windows of ``manifest``'s version, fresh (it was just registered)."""

    def __init__(self, manifest: BundleManifest, config: MonitorConfig) -> None:
        self._config = config
        reference = manifest.reference
        self.features: dict[str, DriftWindow] = {
            f.name: w
            for f in manifest.inputs
            if (w := self._window(reference.features.get(f.name), f.levels)) is not None
        }
        self.outputs: dict[str, DriftWindow] = {
            o.name: w
            for o in manifest.outputs
            if (
                w := self._window(
                    reference.outputs.get(o.name),
                    o.classes if o.kind is OutputKind.label else [],
                )
            )
            is not None
        }
        self._records = 0  # records added since registration (the windows hold the last ones)

    def add_outputs(self, outputs: Mapping[str, float]) -> None:
        """Count one record of the active version (its features are already added, one
        window each) and add its outputs."""
        self._records += 1
        for name, window in self.outputs.items():
            if name in outputs:
                window.add(outputs[name])

    @property
    def window_records(self) -> int:
        """How many records the windows hold now."""
        return min(self._records, self._config.window_records)

    def entries(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Each feature's and output's drift for the status page, by name."""
        return {
            "features": {f: self._entry(w, feature=True) for f, w in sorted(self.features.items())},
            "outputs": {o: self._entry(w, feature=False) for o, w in sorted(self.outputs.items())},
        }

    def readings(self, model: str) -> list[DriftReading]:
        """Each window's statistic and ratios as exported at a scrape."""
        readings: list[DriftReading] = []
        groups: tuple[tuple[Target, dict[str, DriftWindow]], ...] = (
            ("feature", self.features),
            ("output", self.outputs),
        )
        for target, group in groups:
            for value_name, w in group.items():
                is_feature = target == "feature"
                readings.append(
                    DriftReading(
                        model=model,
                        target=target,
                        name=value_name,
                        statistic="js" if isinstance(w, CategoricalWindow) else "psi",
                        value=self._statistic(w),
                        missing_ratio=w.missing_ratio() if is_feature else None,
                        reference_missing_ratio=w.reference_missing_rate if is_feature else None,
                        unseen_ratio=w.unseen_ratio() if is_feature else None,
                    )
                )
        return readings

    def histograms(self, manifest: BundleManifest) -> list[FeatureHistogram]:
        """Each input feature's reference and live bins with its drift (``manifest`` is the
        version these windows were built for)."""
        drawn = []
        for feature in manifest.inputs:
            window = self.features.get(feature.name)
            if window is None:
                continue
            reference, live = window.bins()
            histogram = manifest.reference.features[feature.name].histogram
            value = self._statistic(window)
            drawn.append(
                FeatureHistogram(
                    feature=feature.name,
                    unit=feature.unit,
                    edges=tuple(histogram.edges) if histogram and not feature.levels else (),
                    levels=tuple(feature.levels),
                    reference=reference,
                    live=live,
                    statistic=window.statistic,
                    drift=value,
                    state=self._state_of(window, value),
                )
            )
        return drawn

    def _window(self, ref: ValueReference | None, levels: list[str]) -> DriftWindow | None:
        """A window for one value, or None when its reference gives nothing to compare to."""
        if ref is None:
            return None
        size = self._config.window_records
        if levels:
            if not ref.category_frequencies:
                return None
            return CategoricalWindow(
                levels,
                ref.category_frequencies,
                size=size,
                reference_missing_rate=ref.missing_rate,
            )
        if ref.histogram is None:
            return None
        return NumericWindow(
            ref.histogram.edges,
            ref.histogram.fractions,
            size=size,
            epsilon=self._config.psi_epsilon,
            reference_missing_rate=ref.missing_rate,
        )

    def _statistic(self, window: DriftWindow) -> float | None:
        if window.observed < self._config.min_window_records:
            return None
        return window.value()

    def _state_of(self, window: DriftWindow, value: float | None) -> str:
        if value is None:
            return "insufficient"
        if isinstance(window, CategoricalWindow):
            act, watch = self._config.js_act, self._config.js_act / 2
        else:
            act, watch = self._config.psi_act, self._config.psi_watch
        return "act" if value >= act else "watch" if value >= watch else "ok"

    def _entry(self, window: DriftWindow, *, feature: bool) -> dict[str, Any]:
        value = self._statistic(window)
        entry: dict[str, Any] = {
            "statistic": window.statistic,
            "value": value,
            "state": self._state_of(window, value),
        }
        if feature:
            entry["missing_ratio"] = window.missing_ratio()
            entry["reference_missing_ratio"] = window.reference_missing_rate
            if isinstance(window, CategoricalWindow):
                entry["unseen_ratio"] = window.unseen_ratio()
        return entry
