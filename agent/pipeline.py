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

from prometheus_client import CollectorRegistry

from agent.audit import AuditLog
from agent.bundle.manifest import BundleManifest, FeatureKind
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle
from agent.config import AgentConfig, ModelConfig
from agent.errors import AgentError, RecordError, StoreError, UnknownModel
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.monitor import Monitor
from agent.records import parse_records
from agent.runtime.model import WasmModel
from agent.store import BundleStore
from agent.types import FeatureValue, FeatureVector, IntakePath, Prediction, ScoreRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A verified bundle, its instantiated module and this site's mapping, swapped as one."""

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
        self._swap_lock = threading.Lock()

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
        """Serve the active version of each configured model that the store holds."""
        for model_config in self.config.models:
            try:
                bundle = self.store.load(model_config.name, self.trust, self.limits)
            except StoreError:
                log.info("model not installed yet", extra={"model": model_config.name})
                continue
            self.activate(bundle)

    def activate(self, bundle: VerifiedBundle) -> ServedModel:
        """Instantiate ``bundle`` with this site's mapping, then swap it in atomically.

        Everything that can fail (module validation, mapping against the new schema) happens
        before the swap, so a bad bundle leaves the serving model untouched."""
        model_config = self.config.model(bundle.manifest.name)
        if model_config is None:
            raise UnknownModel(f"model {bundle.manifest.name!r} is not configured here")
        runtime = WasmModel.load(
            bundle.files["model.wasm"], limits=self.limits, cache_dir=self.store.root / "cache"
        )
        mapping = load_mapping(model_config.mapping, bundle.manifest)
        served = ServedModel(model_config, bundle, runtime, mapping)
        with self._swap_lock:
            # metrics first: whoever sees the new version served also sees it in /metrics
            self.monitor.register_model(bundle.manifest, bundle.digest, bundle.signer_keyid)
            self._served = {**self._served, served.name: served}
        log.info(
            "model active",
            extra={"model": served.name, "version": served.version, "digest": bundle.digest},
        )
        return served

    def reconfigure(self, config: AgentConfig) -> None:
        """Apply a reloaded config (SIGHUP): re-bind each served model to its mapping file.

        All mappings load before anything changes, so one broken mapping leaves the whole
        running configuration in place. Limits and listeners change only on restart."""
        rebuilt: dict[str, ServedModel] = {}
        for served in self._served.values():
            model_config = config.model(served.name)
            if model_config is None:
                continue
            mapping = load_mapping(model_config.mapping, served.bundle.manifest)
            rebuilt[served.name] = ServedModel(model_config, served.bundle, served.runtime, mapping)
        with self._swap_lock:
            self.config = config
            self._served = rebuilt

    def served(self, name: str) -> ServedModel:
        served = self._served.get(name)
        if served is None:
            if self.config.model(name) is None:
                raise UnknownModel("no such model is served here")
            raise StoreError(f"model {name!r} has no verified bundle loaded yet")
        return served

    def served_models(self) -> list[ServedModel]:
        return list(self._served.values())

    def risk_output(self, name: str) -> str:
        """The output that FHIR RiskAssessment and CDS Hooks cards report for ``name``."""
        served = self.served(name)
        if served.config.risk_output is not None:
            return served.config.risk_output
        probabilities = [
            o.name for o in served.bundle.manifest.outputs if o.kind.value == "probability"
        ]
        return probabilities[-1] if probabilities else served.bundle.manifest.outputs[0].name

    @property
    def ready(self) -> bool:
        return all(m.name in self._served for m in self.config.models)

    # --- scoring --------------------------------------------------------------------------
    def score(self, request: ScoreRequest) -> list[Prediction]:
        """Score every patient record in ``request``; raise a typed ``AgentError`` on the
        first record that cannot be parsed or mapped (nothing is scored then)."""
        started = time.perf_counter()
        served: ServedModel | None = None
        try:
            served = self.served(request.model)
            records = parse_records(
                request.body, request.format, limits=self.limits, config=self.config.records
            )
            as_of = request.as_of or datetime.now(UTC)
            vectors: list[FeatureVector] = [served.mapping.extract(r, as_of) for r in records]
            mapped = time.perf_counter()
            rows = served.runtime.predict([v.values for v in vectors])
            inferred = time.perf_counter()
        except AgentError as exc:
            self.monitor.observe_error(self._label(request.model), request.intake, exc.reason)
            self._audit(request, served, [], started, exc.reason)
            raise
        predictions = []
        per_record = 1.0 / max(len(vectors), 1)
        for record, vector, row in zip(records, vectors, rows, strict=True):
            outputs = served.outputs(row)
            self.monitor.observe(
                served.name,
                served.version,
                request.intake,
                vector,
                outputs,
                mapping_seconds=(mapped - started) * per_record,
                inference_seconds=(inferred - mapped) * per_record,
                total_seconds=(time.perf_counter() - started) * per_record,
            )
            predictions.append(
                Prediction(
                    model=served.name,
                    version=served.version,
                    bundle_digest=served.bundle.digest,
                    outputs=outputs,
                    vector=vector,
                    label=record.label,
                )
            )
        self._audit(request, served, [p.outputs for p in predictions], started, "ok")
        return predictions

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

    def score_vector(
        self,
        model: str,
        rows: Sequence[Sequence[float]],
        intake: IntakePath,
        version: str | None = None,
        *,
        served: ServedModel | None = None,
    ) -> list[Mapping[str, float]]:
        """Score already-extracted feature rows (Open Inference Protocol, feature CSVs).

        ``served``: the model the caller took at the start of its request (it then
        finishes on it even if a new version is swapped in meanwhile); by default the one
        serving now. ``version`` pins a version: UnknownModel if it is not that one."""
        try:
            served = served if served is not None else self.served(model)
            if version is not None and version != served.version:
                raise UnknownModel(f"version {version} of this model is not the one served")
            width = len(served.bundle.manifest.inputs)
            if any(len(row) != width for row in rows):
                raise RecordError(f"each row needs {width} features in manifest order")
            started = time.perf_counter()
            results = served.runtime.predict(rows)
            elapsed = time.perf_counter() - started
        except AgentError as exc:
            self.monitor.observe_error(self._label(model), intake, exc.reason)
            raise
        outputs: list[Mapping[str, float]] = [served.outputs(row) for row in results]
        manifest = served.bundle.manifest
        per_row = elapsed / max(len(rows), 1)
        for row, out in zip(rows, outputs, strict=True):
            # raw vectors drift like mapped ones: a units mix-up upstream shows here too
            self.monitor.observe(
                served.name,
                served.version,
                intake,
                raw_vector(manifest, row),
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
