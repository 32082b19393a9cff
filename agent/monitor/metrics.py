"""Every Prometheus metric the agent exports, declared here and nowhere else.

Metrics are created against a ``CollectorRegistry`` passed in (never the process-global one),
so each agent instance and each test owns its registry. Names follow the Prometheus
conventions: namespace ``edge_agent_``, base units (seconds), ``_total`` on counters, ``_info``
on constant-1 gauges that carry labels, ``_ratio`` on 0..1 values.

Label sets are fixed and use only: model, version, feature, output, intake, reason, stage,
registry, keyid, threshold, outcome, and for candidate versions mode, role, statistic (closed
sets).
Label values come from the agent's configuration, the signed manifest or closed enums,
never from a request body, so a caller cannot create series and no patient data can reach
a label. docs/metrics.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from agent.monitor.readings import (
    LATENCY_BUCKETS,
    STAGES,
    CandidateReading,
    DriftReading,
    RequestReading,
    WindowReading,
)

NAMESPACE = "edge_agent"

_le: Callable[[float], str] = floatToGoString  # the client's ``le`` format (untyped there)
_BOUNDS = (*(_le(b) for b in LATENCY_BUCKETS), "+Inf")
_DURATION_LABELS = ("model", "version", "intake", "stage")


class DriftCollector:
    """Builds the drift gauges when Prometheus scrapes, from the monitor's windows.

    Computing PSI per record would cost O(bins) for every feature of every request; computed
    here it costs that once per scrape. Only the active models' values appear, so the series
    of a feature that a new model version dropped vanish on the next scrape.
    """

    def __init__(
        self, read: Callable[[], tuple[Iterable[DriftReading], Iterable[WindowReading]]]
    ) -> None:
        self._read = read

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=labels)

        feature = ["model", "feature"]
        output = ["model", "output"]
        return {
            "feature_psi": gauge(
                "feature_drift_psi",
                "Population Stability Index of a numeric feature over the drift window "
                "against the bundle's reference histogram.",
                feature,
            ),
            "feature_js": gauge(
                "feature_drift_js_distance",
                "Jensen-Shannon distance (base 2) of a categorical feature over the drift "
                "window against the bundle's reference category frequencies.",
                feature,
            ),
            "output_psi": gauge(
                "output_drift_psi",
                "Population Stability Index of a numeric model output over the drift window "
                "against the bundle's reference histogram.",
                output,
            ),
            "output_js": gauge(
                "output_drift_js_distance",
                "Jensen-Shannon distance (base 2) of a class output over the drift window "
                "against the bundle's reference class frequencies.",
                output,
            ),
            "missing": gauge(
                "feature_window_missing_ratio",
                "Share of records in the drift window whose source lacked the feature "
                "(missing or imputed).",
                feature,
            ),
            "reference_missing": gauge(
                "feature_reference_missing_ratio",
                "Missing rate of the feature in the training reference, for comparison.",
                feature,
            ),
            "unseen": gauge(
                "feature_window_unseen_category_ratio",
                "Share of non-missing records in the drift window whose category the mapping "
                "could not place among the model's levels.",
                feature,
            ),
            "records": gauge(
                "drift_window_records",
                "Records currently in the model's drift window.",
                ["model"],
            ),
        }

    def describe(self) -> Iterable[Metric]:
        """Names only, so the registry can refuse a duplicate at registration."""
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        readings, windows = self._read()
        for r in readings:
            labels = [r.model, r.name]
            if r.value is not None:
                families[f"{r.target}_{r.statistic}"].add_metric(labels, r.value)
            if r.missing_ratio is not None:
                families["missing"].add_metric(labels, r.missing_ratio)
            if r.reference_missing_ratio is not None:
                families["reference_missing"].add_metric(labels, r.reference_missing_ratio)
            if r.unseen_ratio is not None:
                families["unseen"].add_metric(labels, r.unseen_ratio)
        for w in windows:
            families["records"].add_metric([w.model], float(w.records))
        return list(families.values())


class RequestCollector:
    """Exports the request series at scrape time as the histogram
    ``edge_agent_request_duration_seconds`` and the counter ``edge_agent_predictions_total``,
    the same samples (``_bucket``, ``_count``, ``_sum``, ``_created``) the client's own
    types would give."""

    def __init__(self, read: Callable[[], Iterable[RequestReading]]) -> None:
        self._read = read

    @staticmethod
    def _families() -> tuple[HistogramMetricFamily, CounterMetricFamily]:
        duration = HistogramMetricFamily(
            f"{NAMESPACE}_request_duration_seconds",
            "Time to score one record, by stage: mapping (record to feature vector), "
            "inference (the wasm call), total (end to end).",
            labels=list(_DURATION_LABELS),
        )
        predictions = CounterMetricFamily(
            f"{NAMESPACE}_predictions",
            "Predictions returned, by the model version that made them.",
            labels=["model", "version", "intake"],
        )
        return duration, predictions

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        duration, predictions = self._families()
        for r in self._read():
            for stage, (counts, total) in zip(STAGES, r.stages, strict=True):
                labels = [*r.labels, stage]
                cumulative, buckets = 0, []
                for bound, count in zip(_BOUNDS, counts, strict=True):
                    cumulative += count
                    buckets.append((bound, float(cumulative)))
                duration.add_metric(labels, buckets, total)
                duration.samples.append(
                    Sample(
                        f"{duration.name}_created",
                        dict(zip(_DURATION_LABELS, labels, strict=True)),
                        r.created,
                    )
                )
            predictions.add_metric(list(r.labels), float(r.predictions), created=r.created)
        return [duration, predictions]


class CandidateCollector:
    """Builds the candidate gauges when Prometheus scrapes, from the comparisons as they
    stand: nothing is computed per record, and a promoted or abandoned candidate's series
    vanish on the next scrape."""

    def __init__(self, read: Callable[[], Iterable[CandidateReading]]) -> None:
        self._read = read

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{NAMESPACE}_candidate_{name}", doc, labels=labels)

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(f"{NAMESPACE}_candidate_{name}", doc, labels=labels)

        return {
            "info": gauge(
                "info",
                "The candidate version staged beside the active one (1), how it runs "
                "(shadow or canary) and the id of the key that signed it.",
                ["model", "version", "keyid", "mode"],
            ),
            "since": gauge(
                "staged_timestamp_seconds",
                "Unix time the candidate was staged (the min_days promotion gate).",
                ["model"],
            ),
            "records": counter(
                "compared_records",
                "Records scored by both the active and the candidate version.",
                ["model"],
            ),
            "skipped": counter(
                "skipped_records",
                "Records the candidate was not compared on: queue_full (shadow lane full, "
                "work dropped), refused (the other version could not score it), error.",
                ["model", "reason"],
            ),
            "correlation": gauge(
                "score_correlation",
                "Pearson correlation of the two versions' risk scores over compared records.",
                ["model"],
            ),
            "difference": gauge(
                "score_abs_difference",
                "Absolute difference of the two versions' risk scores: mean over compared "
                "records, p99 over the comparison window.",
                ["model", "statistic"],
            ),
            "agreement": gauge(
                "label_agreement_ratio",
                "Share of compared records on the same side of a card threshold in both versions.",
                ["model", "threshold"],
            ),
            "psi": gauge(
                "score_psi",
                "Population Stability Index of the candidate's risk scores against the "
                "active version's, over the deciles of the active's scores in the window.",
                ["model"],
            ),
            "latency": gauge(
                "latency_seconds",
                "Per-record scoring time (mapping and inference) of each version over the "
                "comparison window.",
                ["model", "role", "statistic"],
            ),
        }

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        f = self._families()
        for r in self._read():
            c = r.comparison
            f["info"].add_metric([r.model, r.version, r.keyid, r.mode], 1.0)
            f["since"].add_metric([r.model], r.since.timestamp())
            f["records"].add_metric([r.model], float(c.records))
            for reason, count in c.skipped.items():
                f["skipped"].add_metric([r.model, reason], float(count))
            if c.correlation is not None:
                f["correlation"].add_metric([r.model], c.correlation)
            for statistic, value in (
                ("mean", c.mean_abs_difference),
                ("p99", c.p99_abs_difference),
            ):
                if value is not None:
                    f["difference"].add_metric([r.model, statistic], value)
            for threshold, share in c.agreement.items():
                if share is not None:
                    f["agreement"].add_metric([r.model, threshold], share)
            if c.psi is not None:
                f["psi"].add_metric([r.model], c.psi)
            for role, quantiles in c.latency_seconds.items():
                for statistic, seconds in quantiles.items():
                    if seconds is not None:
                        f["latency"].add_metric([r.model, role, statistic], seconds)
        return list(f.values())


class AgentMetrics:
    """The agent's metrics, each with its fixed label set (documented in docs/metrics.md)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        drift: Callable[[], tuple[Iterable[DriftReading], Iterable[WindowReading]]],
        candidates: Callable[[], Iterable[CandidateReading]] = list,
        requests: Callable[[], Iterable[RequestReading]] = list,
    ) -> None:
        ns = NAMESPACE
        self.requests = Counter(
            "requests",
            "Scoring attempts: one per prediction returned plus one per error.",
            ["model", "intake"],
            namespace=ns,
            registry=registry,
        )
        self.errors = Counter(
            "errors",
            "Scoring attempts that failed, by cause (the error's reason slug).",
            ["model", "intake", "reason"],
            namespace=ns,
            registry=registry,
        )
        self.feature_missing = Counter(
            "feature_missing",
            "Scored records whose source lacked the feature (whether or not it was imputed).",
            ["model", "feature"],
            namespace=ns,
            registry=registry,
        )
        self.feature_imputed = Counter(
            "feature_imputed",
            "Scored records in which the mapping imputed the feature.",
            ["model", "feature"],
            namespace=ns,
            registry=registry,
        )
        self.feature_out_of_range = Counter(
            "feature_out_of_range",
            "Scored records in which the feature fell outside the manifest's valid range.",
            ["model", "feature"],
            namespace=ns,
            registry=registry,
        )
        self.feature_unseen_category = Counter(
            "feature_unseen_category",
            "Scored records in which a category could not be mapped to a model level.",
            ["model", "feature"],
            namespace=ns,
            registry=registry,
        )
        self.model_active = Gauge(
            "model_active_info",
            "The bundle version serving each model (1), with the id of the key that signed it.",
            ["model", "version", "keyid"],
            namespace=ns,
            registry=registry,
        )
        self.model_deactivations = Counter(
            "model_deactivations",
            "Model versions taken out of service because they no longer verify or load "
            "(signer revoked or removed, file changed at rest, module broken), by reason.",
            ["model", "reason"],
            namespace=ns,
            registry=registry,
        )
        self.bundle_pulls = Counter(
            "bundle_pulls",
            "Bundle pull attempts from a registry.",
            ["model", "registry"],
            namespace=ns,
            registry=registry,
        )
        self.bundle_updates = Counter(
            "bundle_updates",
            "Pulls that installed a new, verified bundle version.",
            ["model", "registry"],
            namespace=ns,
            registry=registry,
        )
        self.bundle_last_success = Gauge(
            "bundle_last_successful_pull_timestamp_seconds",
            "Unix time of the last pull that completed (new version or already current).",
            ["model", "registry"],
            namespace=ns,
            registry=registry,
        )
        self.bundle_pull_failures = Counter(
            "bundle_pull_failures",
            "Pulls that failed to fetch (registry unreachable, bad answer), by reason.",
            ["model", "registry", "reason"],
            namespace=ns,
            registry=registry,
        )
        self.bundle_verification_failures = Counter(
            "bundle_verification_failures",
            "Pulled bundles refused by verification (signature, key, digest, rollback, "
            "expiry, size), by reason.",
            ["model", "registry", "reason"],
            namespace=ns,
            registry=registry,
        )
        # live performance: labelled outcomes joined to earlier predictions (docs/validation.md)
        self.live_labelled = Gauge(
            "live_labelled_predictions",
            "Labelled predictions behind the live figures of a model version.",
            ["model", "version"],
            namespace=ns,
            registry=registry,
        )
        self.live_auroc = Gauge(
            "live_auroc",
            "Rolling AUROC of a model version on this site's outcomes.",
            ["model", "version"],
            namespace=ns,
            registry=registry,
        )
        self.live_brier = Gauge(
            "live_brier",
            "Rolling Brier score of a model version on this site's outcomes (lower is better).",
            ["model", "version"],
            namespace=ns,
            registry=registry,
        )
        self.live_calibration_slope = Gauge(
            "live_calibration_slope",
            "Rolling calibration slope of a model version (1 is calibrated; below 1 the risks "
            "are too extreme).",
            ["model", "version"],
            namespace=ns,
            registry=registry,
        )
        self.live_ppv = Gauge(
            "live_ppv_ratio",
            "Rolling positive predictive value at a card threshold (warning, critical).",
            ["model", "version", "threshold"],
            namespace=ns,
            registry=registry,
        )
        self.reference_auroc = Gauge(
            "reference_auroc",
            "The AUROC the bundle's publisher reports (manifest provenance), for comparison.",
            ["model", "version"],
            namespace=ns,
            registry=registry,
        )
        self.predictions_unrecorded = Counter(
            "predictions_unrecorded",
            "Predictions not kept in the prediction store: its writer's queue was full (the "
            "disk did not keep up) or the insert failed. Their outcomes will not join.",
            namespace=ns,
            registry=registry,
        )
        self.outcomes = Counter(
            "outcomes",
            "Outcomes received, by whether they joined an earlier prediction.",
            ["model", "outcome"],
            namespace=ns,
            registry=registry,
        )
        self.build_info = Gauge(
            "build_info",
            "The agent's version (1).",
            ["version"],
            namespace=ns,
            registry=registry,
        )
        registry.register(RequestCollector(requests))
        registry.register(DriftCollector(drift))
        registry.register(CandidateCollector(candidates))


class AuditMetrics:
    """Whether the audit log is under pressure (``agent.audit``): a flood writing faster
    than its history may be retired. No labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._pressure = Gauge(
            "audit_pressure",
            "1 while the audit log keeps more rotated files than usual because they hold "
            "entries younger than audit.min_age_seconds (or has no room left), else 0.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self._dropped = Counter(
            "audit_entries_dropped",
            "Audit entries not written: audit.max_files files all held entries younger "
            "than audit.min_age_seconds, the writer's queue was full, or the OS refused "
            "the write.",
            namespace=NAMESPACE,
            registry=registry,
        )

    def keeping_young_files(self, keeping: bool) -> None:
        self._pressure.set(1 if keeping else 0)

    def entry_dropped(self) -> None:
        self._dropped.inc()
