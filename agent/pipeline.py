"""The one scoring pipeline: record bytes in, predictions out.

Every intake path (HTTP, Open Inference Protocol, CDS Hooks, MLLP, drop folder, CLI) builds
a ``ScoreRequest`` and calls ``score``; none has its own copy of parsing, mapping or
inference. The pipeline holds one ``ServedModel`` per configured model and swaps it as a
whole: a request takes a reference to the current one at its start and finishes on it, so a
model swap never fails a request in flight.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from agent.audit import AuditLog
from agent.bundle.manifest import BundleManifest, FeatureKind, SemVer
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle
from agent.errors import (
    AgentError,
    InternalError,
    NoPatient,
    RecordError,
    RuntimeFault,
    StoreError,
    UnknownModel,
    UnmappableRecord,
    UntrustedKey,
)
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.monitor import Monitor
from agent.records import parse_records
from agent.runtime.cache import ModuleCache
from agent.runtime.model import WasmModel
from agent.store import BundleStore
from agent.types import (
    FeatureValue,
    FeatureVector,
    IntakePath,
    PatientOutcome,
    PatientRecord,
    Prediction,
    Refusal,
    ScoreRequest,
    ScoreResult,
)

if TYPE_CHECKING:
    # Types only: at run time the pipeline never imports agent.config, which composes the
    # intake paths' config sections (``import agent.pipeline`` loads no agent.intake).
    from agent.config import AgentConfig, CardThresholds, ModelConfig
    from agent.dataplane import ModelView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A verified bundle, its instantiated module and this site's mapping, swapped as one.
    The pipeline's implementation of ``agent.dataplane.ModelView``."""

    config: ModelConfig
    bundle: VerifiedBundle
    runtime: WasmModel
    mapping: SiteMapping

    @property
    def name(self) -> str:
        return self.bundle.manifest.name

    @property
    def version(self) -> str:
        return self.bundle.manifest.version

    @property
    def digest(self) -> str:
        return self.bundle.digest

    @property
    def signer_keyid(self) -> str:
        return self.bundle.signer_keyid

    @property
    def manifest(self) -> BundleManifest:
        return self.bundle.manifest

    @property
    def cards(self) -> CardThresholds:
        return self.config.cards

    @cached_property
    def risk_output(self) -> str:
        """The configured output, else the last probability output, else the first."""
        if self.config.risk_output is not None:
            return self.config.risk_output
        outputs = self.bundle.manifest.outputs
        probabilities = [o.name for o in outputs if o.kind.value == "probability"]
        return probabilities[-1] if probabilities else outputs[0].name

    @cached_property
    def prefetch_codes(self) -> frozenset[str]:
        # component codes and the panels that carry them: a FHIR server's code search
        # matches the panel's own code, not its components'
        return frozenset(c for f in self.mapping.features for c in (*f.codes, *f.panels))

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.bundle.manifest.outputs)

    def outputs(self, row: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.output_names, row, strict=True))


def raw_vector(manifest: BundleManifest, row: Sequence[float]) -> FeatureVector:
    """An already-extracted row as a ``FeatureVector`` for the monitor: NaN is missing,
    values outside the manifest's range and category indexes it does not know are
    flagged, as the mapping flags them for records."""
    features = []
    for spec, value in zip(manifest.inputs, row, strict=True):
        number = float(value)
        missing = math.isnan(number)
        unseen = spec.kind is FeatureKind.categorical and not missing and (
            not number.is_integer() or not 0 <= number < len(spec.levels)
        )
        out_of_range = not missing and (
            (spec.min is not None and number < spec.min)
            or (spec.max is not None and number > spec.max)
        )
        features.append(
            FeatureValue(
                name=spec.name,
                value=None if missing else number,
                display=None if missing else number,
                source="feature vector",
                unit=spec.unit,
                out_of_range=out_of_range,
                unseen_category=unseen,
            )
        )
    return FeatureVector(values=tuple(float(v) for v in row), features=tuple(features))


class ScoringPipeline:
    """Parses, maps, scores and measures; thread-safe."""

    def __init__(
        self,
        config: AgentConfig,
        store: BundleStore,
        trust: TrustStore,
        monitor: Monitor,
        audit: AuditLog | None = None,
    ) -> None:
        self.config = config
        self.limits: Limits = config.resolved_limits
        self.store = store
        self.trust = trust
        self.monitor = monitor
        self.audit = audit
        self._served: dict[str, ServedModel] = {}
        self._unavailable: dict[str, str] = {}
        self._swap_lock = threading.Lock()
        # serialises what changes the served set (load, activate, reload), never scoring
        self._lifecycle_lock = threading.RLock()

    @classmethod
    def from_config(
        cls, config: AgentConfig, registry: CollectorRegistry | None = None
    ) -> ScoringPipeline:
        """Build the pipeline and load every model already installed in the store."""
        monitor = Monitor(
            registry if registry is not None else CollectorRegistry(),
            config.monitor,
            models=[m.name for m in config.models],
        )
        audit = None
        if config.audit.path is not None and config.audit.hmac_key_file is not None:
            audit = AuditLog.from_files(
                config.audit.path, config.audit.hmac_key_file, config.audit.max_bytes
            )
        pipeline = cls(
            config, BundleStore.from_config(config.store), TrustStore(config.trust), monitor, audit
        )
        pipeline.load_installed()
        return pipeline

    # --- model lifecycle ------------------------------------------------------------------
    def load_installed(self) -> None:
        """Serve each configured model from the store, degrading instead of dying: a model
        whose active version fails verification or loading (signer revoked, a file changed
        at rest, a broken module) serves the newest other installed version that passes,
        or is marked unavailable alone (``unavailable`` says why) while the others serve."""
        with self._lifecycle_lock:
            chosen: dict[str, ServedModel] = {}
            unavailable: dict[str, str] = {}
            for model_config in self.config.models:
                outcome = self._servable(model_config, self.trust)
                if isinstance(outcome, str):
                    unavailable[model_config.name] = outcome
                else:
                    chosen[model_config.name] = outcome
            self._commit(chosen, unavailable)

    def activate(self, bundle: VerifiedBundle) -> ServedModel:
        """Instantiate ``bundle`` with this site's mapping, then swap it in atomically.

        Everything that can fail (signer still trusted, module validation, mapping against
        the new schema) happens before the swap, so a bad bundle leaves the serving model
        untouched. The signer is checked against today's trust store: a bundle verified
        before a reload revoked its key is refused (UntrustedKey)."""
        with self._lifecycle_lock:
            model_config = self.config.model(bundle.manifest.name)
            if model_config is None:
                raise UnknownModel(f"model {bundle.manifest.name!r} is not configured here")
            if not self.trust.trusts(bundle.signer_keyid):
                raise UntrustedKey(f"signing key {bundle.signer_keyid} is no longer trusted")
            served = self._instantiate(model_config, bundle)
            unavailable = {k: v for k, v in self._unavailable.items() if k != served.name}
            self._commit({**self._served, served.name: served}, unavailable)
            return served

    def reconfigure(self, config: AgentConfig, trust: TrustStore | None = None) -> None:
        """Apply a reloaded config (SIGHUP) and its trust store, all or nothing.

        First every served model whose signer is still trusted is re-bound to its mapping
        file; a broken mapping raises and changes nothing. Then a model whose signer is now
        revoked or removed is taken out of service (logged, counted) and the newest
        installed version that verifies under ``trust`` serves instead, or none; a model
        not served before (not installed, or signed by a key only now added) is loaded.
        Limits and listeners change only on restart."""
        trust = trust if trust is not None else self.trust
        with self._lifecycle_lock:
            kept: dict[str, ServedModel] = {}
            for model_config in config.models:
                served = self._served.get(model_config.name)
                if served is not None and trust.trusts(served.bundle.signer_keyid):
                    mapping = load_mapping(model_config.mapping, served.bundle.manifest)
                    kept[served.name] = ServedModel(
                        model_config, served.bundle, served.runtime, mapping
                    )
            chosen = dict(kept)
            unavailable: dict[str, str] = {}
            for model_config in config.models:
                name = model_config.name
                if name in kept:
                    continue
                served = self._served.get(name)
                serving = served.version if served is not None else None
                outcome = self._servable(model_config, trust, serving)
                if isinstance(outcome, str):
                    unavailable[name] = outcome
                else:
                    chosen[name] = outcome
            self._commit(chosen, unavailable, config=config, trust=trust)

    @property
    def unavailable(self) -> dict[str, str]:
        """Configured models that serve nothing, each with why (PHI-free: versions and
        error slugs only), for ``/readyz``."""
        return dict(self._unavailable)

    def _instantiate(self, model_config: ModelConfig, bundle: VerifiedBundle) -> ServedModel:
        manifest = bundle.manifest
        cache = ModuleCache(self.store.root / "cache", self.store.root / "state" / "compiled")
        runtime = WasmModel.load(bundle.files["model.wasm"], limits=self.limits, cache=cache)
        runtime.self_test(len(manifest.inputs), len(manifest.outputs), manifest.reference_row())
        mapping = load_mapping(model_config.mapping, manifest)
        return ServedModel(model_config, bundle, runtime, mapping)

    def _servable(
        self, model_config: ModelConfig, trust: TrustStore, serving: str | None = None
    ) -> ServedModel | str:
        """The model to serve for ``model_config``: the store's active version, or, when
        it fails verification or loading, the newest installed version below it that
        passes, then the newest above it. Returns why nothing can serve otherwise.
        The version ``serving`` now (default: the active one) failing is a deactivation:
        logged and counted."""
        name = model_config.name
        installed = self.store.versions(name)
        if not installed:
            log.info("model not installed yet", extra={"model": name})
            return "not installed"
        try:
            active = self.store.active_version(name)
        except StoreError:
            active = None
        below = [v for v in installed if active is None or SemVer(v) < SemVer(active)]
        above = [v for v in installed if active is not None and SemVer(v) > SemVer(active)]
        order = ([active] if active in installed else []) + below[::-1] + above[::-1]
        refused: list[str] = []
        for version in order:
            try:
                bundle = self.store.load(name, trust, self.limits, version=version)
                served = self._instantiate(model_config, bundle)
            except AgentError as error:
                refused.append(f"{version}: {error.reason}")
                if version == (serving or active):
                    self._deactivated(name, version, error.reason)
                else:
                    log.info(
                        "installed version refused",
                        extra={"model": name, "version": version, "reason": error.reason},
                    )
                continue
            return served
        return "no installed version can serve (" + ", ".join(refused) + ")"

    def _deactivated(self, name: str, version: str, reason: str) -> None:
        log.warning(
            "model version deactivated",
            extra={"model": name, "version": version, "reason": reason},
        )
        self.monitor.observe_deactivation(name, reason)

    def _commit(
        self,
        chosen: dict[str, ServedModel],
        unavailable: dict[str, str],
        *,
        config: AgentConfig | None = None,
        trust: TrustStore | None = None,
    ) -> None:
        """Swap in ``chosen`` (and a reloaded config and trust store) at once; make each
        version that now serves the store's active one (a fallback stays across restarts)."""
        with self._swap_lock:
            previous, was_unavailable = self._served, self._unavailable
            # metrics first: whoever sees the new version served also sees it in /metrics
            for served in chosen.values():
                if previous.get(served.name) is not served:
                    self.monitor.register_model(
                        served.bundle.manifest, served.bundle.digest, served.bundle.signer_keyid
                    )
            for name in previous.keys() - chosen.keys():  # unavailable, or no longer configured
                self.monitor.unregister_model(name)
            if config is not None:
                self.config = config
            if trust is not None:
                self.trust = trust
            self._served = chosen
            self._unavailable = unavailable
        for served in chosen.values():
            old = previous.get(served.name)
            if old is not None and old.bundle is served.bundle:
                continue
            self._make_active(served)
            log.info(
                "model active",
                extra={
                    "model": served.name,
                    "version": served.version,
                    "digest": served.bundle.digest,
                },
            )
        for name, reason in unavailable.items():
            if was_unavailable.get(name) != reason:
                log.warning("model unavailable", extra={"model": name, "reason": reason})

    def _make_active(self, served: ServedModel) -> None:
        """Point the store's active version at the version that now serves (a fallback,
        a rollback), so ``models list`` and the next start agree with what serves."""
        try:
            active = self.store.active_version(served.name)
        except StoreError:
            active = None
        if active is None or active == served.version:
            return
        if served.version not in self.store.versions(served.name):
            return
        try:
            self.store.activate(served.name, served.version)
        except (OSError, AgentError):
            log.exception("could not record the fallback as active", extra={"model": served.name})

    def served(self, name: str, version: str | None = None) -> ServedModel:
        """The model serving ``name`` now (see ``DataPlane.model``)."""
        served = self._served.get(name)
        if served is None:
            if self.config.model(name) is None:
                raise UnknownModel("no such model is served here")
            raise StoreError(f"model {name!r} has no verified bundle loaded yet")
        if version is not None and version != served.version:
            raise UnknownModel(f"version {version} of this model is not the one served")
        return served

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
        }

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
                request.body, request.format, limits=self.limits, config=self.config.records
            )
            if not records:
                raise NoPatient("the input holds no patient to score")
            as_of = request.as_of or datetime.now(UTC)
            outcomes = self._outcomes(served, records, as_of, request.intake, started)
        except AgentError as exc:
            self.monitor.observe_error(self._label(request.model), request.intake, exc.reason)
            self._audit(request, served, [], started, exc.reason)
            raise
        except Exception as exc:
            raise self._internal(request, served, started, exc) from None
        scored = [o.prediction.outputs for o in outcomes if o.prediction is not None]
        verdict = "ok" if len(scored) == len(outcomes) else "partial" if scored else "refused"
        self._audit(request, served, scored, started, verdict)
        return ScoreResult(
            model=served.name,
            version=served.version,
            bundle_digest=served.digest,
            outcomes=tuple(outcomes),
            as_of=as_of,
        )

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
    ) -> list[PatientOutcome]:
        """Map each record alone, then score the mappable ones in one call."""
        refusals: dict[int, Refusal] = {}
        vectors: dict[int, FeatureVector] = {}
        for index, record in enumerate(records):
            if record.problem is not None:
                refusals[index] = Refusal("no_subject", record.problem)
                continue
            try:
                vectors[index] = served.mapping.extract(record, as_of)
            except UnmappableRecord as exc:
                refusals[index] = Refusal(exc.reason, str(exc), exc.feature)
        mapped = time.perf_counter()
        rows = self._predict(served, [v.values for v in vectors.values()])
        inferred = time.perf_counter()
        per_record = 1.0 / max(len(vectors), 1)
        predictions: dict[int, Prediction] = {}
        for (index, vector), row in zip(vectors.items(), rows, strict=True):
            if isinstance(row, Refusal):
                refusals[index] = row
                continue
            outputs = served.outputs(row)
            self.monitor.observe(
                served.name,
                served.version,
                intake,
                vector,
                outputs,
                mapping_seconds=(mapped - started) * per_record,
                inference_seconds=(inferred - mapped) * per_record,
                total_seconds=(time.perf_counter() - started) * per_record,
            )
            record = records[index]
            predictions[index] = Prediction(
                model=served.name,
                version=served.version,
                bundle_digest=served.digest,
                outputs=outputs,
                vector=vector,
                label=record.label,
                as_of=as_of,
                subject=record.subject,
            )
        for refusal in refusals.values():
            self.monitor.observe_error(served.name, intake, refusal.reason)
        return [
            PatientOutcome(
                reference=record.reference,
                label=record.label,
                prediction=predictions.get(index),
                refusal=refusals.get(index),
                subject=record.subject,
            )
            for index, record in enumerate(records)
        ]

    def _predict(
        self, served: ServedModel, rows: Sequence[Sequence[float]]
    ) -> list[Sequence[float] | Refusal]:
        """One call for all rows; when it fails, row by row, so a row that traps the
        module (or runs out of fuel) is refused alone."""
        if not rows:
            return []
        try:
            return list(served.runtime.predict(rows))
        except RuntimeFault as exc:
            if len(rows) == 1:
                return [Refusal(exc.reason, str(exc))]
        return [result for row in rows for result in self._predict(served, [row])]

    def _internal(
        self,
        request: ScoreRequest,
        served: ServedModel | None,
        started: float,
        exc: Exception,
    ) -> InternalError:
        """A bug: counted as ``internal``, logged once with the request id (the type only: a
        message could quote a record), audited, and answered without its message."""
        log.error(
            "unexpected error while scoring",
            extra={"error_type": type(exc).__name__, "request_id": request.request_id},
        )
        self.monitor.observe_error(self._label(request.model), request.intake, "internal")
        self._audit(request, served, [], started, "internal")
        return InternalError(f"unexpected error; request id {request.request_id}")

    def _audit(
        self,
        request: ScoreRequest,
        served: ServedModel | None,
        outputs: Sequence[Mapping[str, float]],
        started: float,
        outcome: str,
    ) -> None:
        if self.audit is None:
            return
        self.audit.record(
            request_id=request.request_id,
            intake=request.intake.value,
            caller=request.caller,
            model=self._label(request.model),
            version=served.version if served else None,
            bundle_digest=served.bundle.digest if served else None,
            body=request.body,
            outputs=outputs,
            seconds=time.perf_counter() - started,
            outcome=outcome,
        )

    def score_vectors(
        self, model: ModelView, rows: Sequence[Sequence[float]], intake: IntakePath
    ) -> list[Mapping[str, float]]:
        """Score already-extracted feature rows (Open Inference Protocol, feature CSVs) on
        the model view the caller took at the start of its request."""
        served = self._own(model)
        try:
            width = len(served.manifest.inputs)
            if any(len(row) != width for row in rows):
                raise RecordError(f"each row needs {width} features in manifest order")
            if any(math.isinf(value) for row in rows for value in row):
                raise RecordError("feature values must be finite numbers (NaN means missing)")
            started = time.perf_counter()
            results = served.runtime.predict(rows)
            elapsed = time.perf_counter() - started
        except AgentError as exc:
            self.monitor.observe_error(served.name, intake, exc.reason)
            raise
        except Exception as exc:
            log.error("unexpected error while scoring rows",
                      extra={"error_type": type(exc).__name__})
            self.monitor.observe_error(served.name, intake, "internal")
            raise InternalError("unexpected error while scoring rows") from None
        outputs: list[Mapping[str, float]] = [served.outputs(row) for row in results]
        per_row = elapsed / max(len(rows), 1)
        for row, out in zip(rows, outputs, strict=True):
            # raw vectors drift like mapped ones: a units mix-up upstream shows here too
            self.monitor.observe(
                served.name,
                served.version,
                intake,
                raw_vector(served.manifest, row),
                out,
                mapping_seconds=0.0,
                inference_seconds=per_row,
                total_seconds=per_row,
            )
        return outputs

    def count_refusal(self, model: str, intake: IntakePath, error: AgentError) -> None:
        """Count a request an intake path refused before it reached the pipeline (a wrong
        media type, a body too large, a malformed tensor), so error ratios see it too."""
        self.monitor.observe_error(self._label(model), intake, error.reason)

    def _label(self, model: str) -> str:
        """A metric label for ``model``: only configured names, so callers cannot mint series."""
        return model if self.config.model(model) is not None else "unknown"
