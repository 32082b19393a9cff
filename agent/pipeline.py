"""The one scoring pipeline: record bytes in, predictions out.

Every intake path (HTTP, Open Inference Protocol, CDS Hooks, MLLP, drop folder, CLI) builds
a ``ScoreRequest`` and calls ``score``; none has its own copy of parsing, mapping or
inference. The pipeline holds one ``ServedModel`` per configured model and swaps it as a
whole: a request takes a reference to the current one at its start and finishes on it, so a
model swap never fails a request in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from agent.audit import AuditLog
from agent.bundle.trust import TrustStore
from agent.errors import (
    RUNTIME_FAULT_REASONS,
    AgentError,
    InternalError,
    NoPatient,
    NoSubject,
    NotEnabled,
    UnknownModel,
    UnmappableRecord,
)
from agent.monitor import Monitor
from agent.monitor.metrics import AuditMetrics
from agent.monitor.monitor import reference_auroc
from agent.monitor.readings import CandidateReading
from agent.performance.tracker import PerformanceTracker
from agent.records import parse_records
from agent.rollout.canary import canary_key, in_canary
from agent.rollout.candidates import Candidate
from agent.rollout.gates import LiveAuroc
from agent.rollout.shadow import ShadowLane
from agent.rollout.shadow_scoring import ShadowComparer
from agent.serving import ServedModel, ServedModels
from agent.store import BundleStore
from agent.types import (
    EdgeRefusal,
    FeatureHistogram,
    FeatureVector,
    IntakePath,
    OutcomeReceipt,
    OutcomeReport,
    PatientOutcome,
    PatientRecord,
    Refusal,
    ScoreRequest,
    ScoreResult,
)
from agent.vector_scoring import OutcomeScorer, predict_rows, read_rows

if TYPE_CHECKING:
    # Types only: at run time the pipeline never imports agent.config, which composes the
    # intake paths' config sections (``import agent.pipeline`` loads no agent.intake).
    from agent.config import AgentConfig
    from agent.dataplane import ModelView

log = logging.getLogger(__name__)

Asked = tuple[str, IntakePath, str, str, bytes]  # who asked, for the audit log: request id,
# intake, caller, model label, and the bytes that were scored

WRITER_STOP_FLOOR = 0.5  # seconds each writer thread gets to finish at a stop, bound or not


class ScoringPipeline(ServedModels):
    """Parses, maps, scores and measures; the one implementation of ``DataPlane``."""

    def __init__(
        self,
        config: AgentConfig,
        store: BundleStore,
        trust: TrustStore,
        monitor: Monitor,
        audit: AuditLog | None = None,
        performance: PerformanceTracker | None = None,
    ) -> None:
        super().__init__(config, store, trust, monitor, audit)
        self.performance = performance
        self._canary_key = canary_key(config.audit.hmac_key_file)
        self._shadow = ShadowLane(self.limits.shadow_queue_max, self.limits.shadow_start_delay)
        self._comparer = ShadowComparer(
            predict_rows,
            performance,
            self._candidates.checkpoint,
            self.limits.comparison_checkpoint,
        )
        self._scorer = OutcomeScorer(monitor)
        # the configured model names, of the config they were read from (``_label``)
        self._names: tuple[AgentConfig, frozenset[str]] = (config, _names(config))
        monitor.watch_candidates(self.candidate_readings)

    def start(self) -> None:
        """Start the shadow lane: a candidate answers its canary share and is compared
        only while it runs; the audit log and the prediction store write through their
        writer threads."""
        self._shadow.start()
        if self.audit is not None:
            self.audit.start()
        if self.performance is not None:
            self.performance.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the shadow lane within ``timeout`` seconds (its queued work is dropped; a
        task in hand past the bound is abandoned with its daemon thread), keep each
        candidate's comparison in the store (a restart resumes it), then write every
        queued audit entry and prediction within what is left of it (at least
        ``WRITER_STOP_FLOOR`` each: a few milliseconds normally suffice, and a clean stop
        should lose nothing)."""
        deadline = time.monotonic() + timeout
        self._shadow.stop(timeout)
        self._candidates.checkpoint()
        if self.audit is not None:
            self.audit.stop(max(deadline - time.monotonic(), WRITER_STOP_FLOOR))
        if self.performance is not None:
            self.performance.stop(max(deadline - time.monotonic(), WRITER_STOP_FLOOR))

    def reconfigure(self, config: AgentConfig, trust: TrustStore | None = None) -> None:
        key = canary_key(config.audit.hmac_key_file)  # an unreadable secret changes nothing
        super().reconfigure(config, trust)
        self._canary_key = key

    @classmethod
    def from_config(
        cls, config: AgentConfig, registry: CollectorRegistry | None = None
    ) -> ScoringPipeline:
        """Build the pipeline and load every model already installed in the store."""
        registry = registry if registry is not None else CollectorRegistry()
        monitor = Monitor(registry, config.monitor, models=[m.name for m in config.models])
        audit = None
        if config.audit.path is not None and config.audit.hmac_key_file is not None:
            audit = AuditLog.from_files(
                config.audit.path,
                config.audit.hmac_key_file,
                config.audit.retention(),
                AuditMetrics(registry),
                limits=config.resolved_limits,
                write_before_answer=config.audit.write_before_answer,
            )
        store = BundleStore.from_config(config.store)
        performance = None
        if config.performance.enabled:
            performance = PerformanceTracker.open(
                config.performance,
                store.root / "state",
                config.audit.hmac_key_file,
                monitor,
                config.resolved_limits,
            )
        pipeline = cls(config, store, TrustStore(config.trust), monitor, audit, performance)
        pipeline.load_installed()
        return pipeline

    def model(self, name: str, version: str | None = None) -> ModelView:
        return self.served(name, version)

    def served_models(self) -> list[ServedModel]:
        return list(self._served.values())

    def models(self) -> list[ModelView]:
        return list(self._served.values())

    def readiness(self) -> dict[str, str | None]:
        return {
            m.name: None
            if m.name in self._served
            else self._unavailable.get(m.name, "no verified bundle loaded yet")
            for m in self.config.models
        }

    @property
    def ready(self) -> bool:
        return all(m.name in self._served for m in self.config.models)

    def status(self) -> Mapping[str, Any]:
        return {
            "site": self.config.site,
            "ready": self.ready,
            "configured": [m.name for m in self.config.models],
            "act": {"psi": self.config.monitor.psi_act, "js": self.config.monitor.js_act},
            "models": self.monitor.snapshot()["models"],
            "cards": {
                m.name: m.manifest.card.model_dump(mode="json")
                for m in self.served_models()
                if m.manifest.card is not None
            },
            "live": {
                m.name: self.performance.status(
                    m.name, reference_auroc(m.manifest.provenance.metrics)
                )
                for m in self.served_models()
                if self.performance is not None
            },
            "candidates": {
                r.model: {
                    "version": r.version,
                    "digest": r.digest,
                    "keyid": r.keyid,
                    "mode": r.mode,
                    "since": r.since.isoformat(),
                    "canary_share": r.canary_share,
                    "comparison": r.comparison.to_dict(),
                }
                for r in self.candidate_readings()
            },
        }

    def feature_histograms(self, model: ModelView) -> list[FeatureHistogram]:
        return self.monitor.histograms(model.manifest)

    def candidate_readings(self) -> list[CandidateReading]:
        """Each staged candidate and its comparison as it stands (metrics, status, CLI)."""
        readings = []
        for candidate in list(self._candidates.values()):
            served = candidate.served
            readings.append(
                CandidateReading(
                    model=served.name,
                    version=served.version,
                    digest=served.digest,
                    keyid=served.signer_keyid,
                    mode="canary" if candidate.canary else "shadow",
                    since=candidate.since,
                    canary_share=served.config.canary_share if candidate.canary else 0.0,
                    comparison=candidate.comparison.read(),
                )
            )
        return readings

    # --- scoring --------------------------------------------------------------------------
    def score(self, request: ScoreRequest, model: ModelView | None = None) -> ScoreResult:
        """Score every patient record in ``request``, each on its own: one outcome per
        patient, scored or refused with a reason (see ``agent.dataplane.DataPlane.score``).

        ``model``: the view the caller took at the start of its request (it then finishes
        on it even if a new version is swapped in meanwhile); by default the one serving."""
        started = time.perf_counter()
        served: ServedModel | None = None
        try:
            served = self._own(model) if model is not None else self.served(request.model)
            records = parse_records(
                request.body,
                request.format,
                limits=self.limits,
                config=self.config.records,
                reach=served.mapping.reach,
            )
            if not records:
                raise NoPatient("the input holds no patient to score")
            as_of = request.as_of or datetime.now(UTC)
            outcomes = self._outcomes(
                served, records, as_of, request.intake, started, explain=request.explain
            )
        except AgentError as exc:
            self.monitor.observe_error(self._label(request.model), request.intake, exc.reason)
            self._audit(self._asked(request), served, [], started, exc.reason)
            raise
        except Exception as exc:
            raise self._internal(self._asked(request), served, started, exc) from None
        scored = [o.prediction.outputs for o in outcomes if o.prediction is not None]
        verdict = _verdict(len(scored), len(outcomes))
        self._audit(self._asked(request), served, scored, started, verdict)
        return ScoreResult(served.name, served.version, served.digest, tuple(outcomes), as_of)

    @staticmethod
    def _own(model: ModelView) -> ServedModel:
        if not isinstance(model, ServedModel):
            raise UnknownModel("this model view was not made by this agent")
        return model

    def _outcomes(
        self,
        served: ServedModel,
        records: Sequence[PatientRecord],
        as_of: datetime,
        intake: IntakePath,
        started: float,
        *,
        explain: bool = False,
    ) -> list[PatientOutcome]:
        """Score each record on the version that answers it: the active one, or for a
        canary share of patients the candidate. Then hand both versions' comparison to the
        shadow lane: the answer is computed and the request never waits for it. With
        ``explain``, each prediction carries its feature contributions."""
        candidate = self._live_candidate(served)
        if candidate is None:
            return self._score_on(served, records, as_of, intake, started, explain=explain)
        share = candidate.served.config.canary_share if candidate.canary else 0.0
        trial = (in_canary(self._canary_key, r.reference, share) for r in records)
        answering = [candidate.served if t else served for t in trial]
        outcomes: list[PatientOutcome | None] = [None] * len(records)
        seconds: dict[str, float] = {}  # per record, by the digest of the version answering
        for model in (candidate.served, served):  # the candidate first: see below
            indices = [i for i, m in enumerate(answering) if m is model]
            if not indices:
                continue
            begun = time.perf_counter()
            part = self._score_on(
                model, [records[i] for i in indices], as_of, intake, started, explain=explain
            )
            seconds[model.digest] = (time.perf_counter() - begun) / len(indices)
            for index, outcome in zip(indices, part, strict=True):
                outcomes[index] = outcome
                fault = outcome.refusal.reason if outcome.refusal else None
                if model is candidate.served and fault in RUNTIME_FAULT_REASONS:
                    # a candidate on trial must not fail a patient the active version can
                    # answer: its fault is counted (and its comparison skips the record)
                    answering[index] = served
                    log.warning(
                        "canary candidate failed; the active version answers",
                        extra={"model": model.name, "version": model.version},
                    )
        answered = [o for o in outcomes if o is not None]
        self._shadow.submit(
            lambda: self._comparer.records(candidate, served, records, answered, as_of, seconds),
            lambda: candidate.comparison.skip("queue_full", len(records)),
        )
        return answered

    def _live_candidate(self, served: ServedModel) -> Candidate | None:
        """The candidate beside ``served``, only while the shadow lane runs (the daemon
        starts it): one-shot commands (``score``, ``validate``) answer from the active
        version alone and compare nothing."""
        return self.candidate(served.name) if self._shadow.running else None

    def _score_on(
        self,
        served: ServedModel,
        records: Sequence[PatientRecord],
        as_of: datetime,
        intake: IntakePath,
        started: float,
        *,
        explain: bool = False,
    ) -> list[PatientOutcome]:
        """Map each record alone, then score the mappable ones in one call; with
        ``explain``, each prediction carries its feature contributions."""
        pending: list[PatientOutcome] = []
        vectors: dict[int, FeatureVector] = {}
        for index, record in enumerate(records):
            refusal = None
            if record.problem is not None:
                refusal = Refusal(NoSubject.reason, record.problem)
            else:
                try:
                    vectors[index] = served.mapping.extract(record, as_of)
                except UnmappableRecord as exc:
                    refusal = Refusal(exc.reason, str(exc), exc.feature)
            pending.append(
                PatientOutcome(record.reference, record.label, None, refusal, record.subject)
            )
        outcomes = self._scorer.outcomes(
            served, (pending, vectors), as_of, intake, started, explain=explain
        )
        if self.performance is not None and vectors:
            kept = [(o.reference, o.prediction) for o in outcomes if o.prediction is not None]
            if kept:
                self.performance.scored(served.name, served.version, served.risk_output, kept)
        return outcomes

    def _asked(self, request: ScoreRequest) -> Asked:
        return (
            request.request_id,
            request.intake,
            request.caller,
            self._label(request.model),
            request.body,
        )

    def _internal(
        self, asked: Asked, served: ServedModel | None, started: float, exc: Exception
    ) -> InternalError:
        """A bug: counted as ``internal``, logged once with the request id (the type only: a
        message could quote a record), audited, and answered without its message."""
        request_id, intake, _, model, _ = asked
        log.error(
            "unexpected error while scoring",
            extra={"error_type": type(exc).__name__, "request_id": request_id},
        )
        self.monitor.observe_error(model, intake, "internal")
        self._audit(asked, served, [], started, "internal")
        return InternalError(f"unexpected error; request id {request_id}")

    def _audit(
        self,
        asked: Asked,
        served: ServedModel | None,
        outputs: Sequence[Mapping[str, float]],
        started: float,
        outcome: str,
    ) -> None:
        """One audit entry per request, records and raw rows alike: the outputs scored
        and the verdict (``ok``, ``partial``, ``refused``, or the request's reason)."""
        if self.audit is None:
            return
        request_id, intake, caller, model, body = asked
        self.audit.record(
            request_id=request_id,
            intake=intake.value,
            caller=caller,
            model=model,
            version=served.version if served else None,
            bundle_digest=served.bundle.digest if served else None,
            body=body,
            outputs=outputs,
            seconds=time.perf_counter() - started,
            outcome=outcome,
        )

    def score_vectors(
        self,
        model: ModelView,
        rows: Sequence[Sequence[float]],
        intake: IntakePath,
        *,
        caller: str = "anonymous",
        request_id: str = "",
        body: bytes = b"",
    ) -> ScoreResult:
        """Score already-extracted feature rows (Open Inference Protocol, feature CSVs) on
        the model view the caller took at the start of its request: one outcome per row, in
        order, under the same rules as a mapped record (``agent.vector_scoring``), audited
        as a request of records is (``body``: the bytes the rows came in)."""
        served = self._own(model)
        started = time.perf_counter()
        asked = (request_id, intake, caller, served.name, body)
        try:
            read = read_rows(served, rows)
            as_of = datetime.now(UTC)
            outcomes = self._scorer.outcomes(served, read, as_of, intake, started)
        except AgentError as exc:
            self.monitor.observe_error(served.name, intake, exc.reason)
            self._audit(asked, served, [], started, exc.reason)
            raise
        except Exception as exc:
            raise self._internal(asked, served, started, exc) from None
        scored = [o.prediction for o in outcomes if o.prediction is not None]
        verdict = _verdict(len(scored), len(outcomes))
        self._audit(asked, served, [p.outputs for p in scored], started, verdict)
        candidate = self._live_candidate(served)
        if candidate is not None and scored:
            per_row = (time.perf_counter() - started) / len(rows)
            values = [p.vector.values for p in scored]
            outputs = [p.outputs for p in scored]
            self._shadow.submit(
                lambda: self._comparer.rows(candidate, served, values, outputs, per_row),
                lambda: candidate.comparison.skip("queue_full", len(values)),
            )
        return ScoreResult(served.name, served.version, served.digest, tuple(outcomes), as_of)

    def _live_auroc(self, candidate: Candidate) -> LiveAuroc:
        if self.performance is None:
            return LiveAuroc(None, None)
        served = candidate.served
        thresholds = {"warning": served.cards.warning, "critical": served.cards.critical}
        figures = self.performance.live(served.name, thresholds)
        active = self._served.get(served.name)

        def auroc(version: str | None) -> float | None:
            found = figures.get(version) if version is not None else None
            return found.auroc if found is not None else None

        return LiveAuroc(auroc(active.version if active else None), auroc(served.version))

    def record_outcomes(self, model: str, reports: Sequence[OutcomeReport]) -> OutcomeReceipt:
        """Join outcomes to this model's earlier predictions (NotEnabled unless the site
        keeps a prediction store) and refresh its live figures."""
        if self.performance is None:  # first: no outcome waits for a model to be told this
            raise NotEnabled("live performance is not enabled (performance.enabled)")
        served = self.served(model)
        thresholds = {"warning": served.cards.warning, "critical": served.cards.critical}
        return self.performance.outcomes(served.name, reports, thresholds)

    def count_refusal(self, model: str, intake: IntakePath, error: AgentError) -> None:
        """Count a request an intake path refused before it reached the pipeline (a wrong
        media type, a body too large, a malformed tensor), so error ratios see it too."""
        self.monitor.observe_error(self._label(model), intake, error.reason)

    def audit_refusal(self, refusal: EdgeRefusal) -> None:
        if self.audit is not None:
            self.audit.record_refusal(refusal)

    def _label(self, model: str) -> str:
        """A metric label for ``model``: only configured names, so callers cannot mint series."""
        config, names = self._names
        if config is not self.config:  # reloaded: one set per config, not a scan per request
            config = self.config
            self._names = (config, names := _names(config))
        return model if model in names else "unknown"


def _names(config: AgentConfig) -> frozenset[str]:
    return frozenset(m.name for m in config.models)


def _verdict(scored: int, patients: int) -> str:
    """A request's audited outcome: every patient scored, some, or none."""
    return "ok" if scored == patients else "partial" if scored else "refused"
