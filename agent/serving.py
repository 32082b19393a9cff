"""The set of models a pipeline serves, and how it changes: load from the store at start,
activate a pulled bundle, reload (SIGHUP) with a new config and trust store, fall back
when an active version fails verification. Scoring lives in ``agent.pipeline``, which
builds on this class; a candidate version staged beside the active one lives in
``agent.rollout.candidates``, which this class drives under the same lifecycle lock.

Security-relevant: a model is served only after its bundle verified under the current
trust store, its module ran once on the manifest's reference row, and the site mapping
loaded against its schema; a version whose signer is revoked is taken out of service.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from agent.audit import AuditLog
from agent.bundle.manifest import BundleManifest, SemVer
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle
from agent.contributions import Explainer, load_explainer, unavailable
from agent.errors import AgentError, MappingError, StoreError, UnknownModel, UntrustedKey
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.monitor import Monitor
from agent.rollout.candidates import Candidate, CandidateVersions, Promotion
from agent.rollout.comparison import ComparisonReading
from agent.rollout.config import Placement, placement
from agent.rollout.gates import GateResult, LiveAuroc
from agent.runtime.cache import ModuleCache
from agent.runtime.model import WasmModel
from agent.store import BundleStore
from agent.types import Contributions

if TYPE_CHECKING:
    # Types only: at run time nothing here imports agent.config, which composes the
    # intake paths' config sections (``import agent.pipeline`` loads no agent.intake).
    from agent.config import AgentConfig, CardThresholds, ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A verified bundle, its instantiated module and this site's mapping, swapped as one.
    The pipeline's implementation of ``agent.dataplane.ModelView``."""

    config: ModelConfig
    bundle: VerifiedBundle
    runtime: WasmModel
    mapping: SiteMapping
    explainer: Explainer | None = None  # from the bundle's explain.json, when it has one

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

    def contributions(self, row: Sequence[float]) -> Contributions:
        """How much each feature of ``row`` moved the explained output, or why this
        model cannot say."""
        return unavailable() if self.explainer is None else self.explainer.contributions(row)

    def rebound(self, model_config: ModelConfig) -> ServedModel:
        """The same bundle and module bound to a reloaded model config and its mapping file
        (MappingError when it no longer fits)."""
        mapping = load_mapping(model_config.mapping, self.bundle.manifest)
        return ServedModel(model_config, self.bundle, self.runtime, mapping, self.explainer)


class ServedModels:
    """What is served, per configured model, and the one way it changes (thread-safe)."""

    def __init__(
        self,
        config: AgentConfig,
        store: BundleStore,
        trust: TrustStore,
        monitor: Monitor,
        audit: AuditLog | None = None,
    ) -> None:
        self.config = config
        self.audit = audit
        self.limits: Limits = config.resolved_limits
        self.store = store
        self.trust = trust
        self.monitor = monitor
        self._served: dict[str, ServedModel] = {}
        self._unavailable: dict[str, str] = {}
        self._candidates = CandidateVersions(
            lambda: self.config, store, self.limits, self._record, self._live_auroc
        )
        self._swap_lock = threading.Lock()
        # serialises what changes the served set (load, activate, reload), never scoring
        self._lifecycle_lock = threading.RLock()

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
            self._candidates.restore(self.config.models, chosen, self.trust, self._instantiate)

    def place(self, bundle: VerifiedBundle) -> Placement:
        """Put a newly pulled bundle where the model's ``rollout`` says: serving at once
        (``activate``), or staged as the candidate beside the active version, replacing any
        earlier candidate. Checks as ``activate`` does before anything changes."""
        with self._lifecycle_lock:
            model_config = self._configured(bundle)
            previous = self._served.get(model_config.name)
            where = placement(model_config.rollout, previous is not None)
            if where == "active":
                served = self.activate(bundle)
                self._record(
                    "activation",
                    served.name,
                    {
                        "version": served.version,
                        "bundle_digest": served.digest,
                        "previous_version": previous.version if previous else None,
                    },
                )
                return where
            self._candidates.stage(self._instantiate(model_config, bundle), previous)
            return where

    # --- the candidate beside each model (agent.rollout.candidates) -----------------------
    def candidate(self, name: str) -> Candidate | None:
        """The candidate staged for ``name``, if any."""
        return self._candidates.get(name)

    def review(self, name: str) -> tuple[Candidate, ComparisonReading, list[GateResult]]:
        """``name``'s candidate, its comparison now and every promotion gate against it."""
        return self._candidates.review(name)

    def promote(self, name: str, *, force_reason: str | None = None) -> Promotion:
        """Make ``name``'s candidate the active version when every promotion gate passes,
        or whatever they say when ``force_reason`` (the operator's, for the audit log) is
        given. Audited with the comparison and gates at this moment. RolloutError when
        there is no candidate or a gate fails (unforced)."""
        with self._lifecycle_lock:
            return self._candidates.promote(name, force_reason, self._serve)

    def abandon(self, name: str) -> Candidate:
        """Drop ``name``'s candidate (it stays installed and is not pulled again; a newer
        published version becomes the next candidate). Audited with the comparison."""
        with self._lifecycle_lock:
            return self._candidates.abandon(name)

    def rolled_back(self, name: str, previous: str | None, version: str) -> None:
        """Audit an operator's rollback of the active version (the candidate stays)."""
        self._record("rollback", name, {"previous_version": previous, "version": version})

    def _live_auroc(self, candidate: Candidate) -> LiveAuroc:
        """Both versions' live AUROC; the scoring pipeline reads its prediction store."""
        return LiveAuroc(None, None)

    def _record(self, event: str, name: str, evidence: dict[str, object]) -> None:
        """Every change of what answers (activation of a pulled version, staging of a
        candidate, promotion, rollback, abandonment) is logged, and audited when the audit
        log is configured: ``models history`` reads these entries back."""
        log.info(f"model {event}", extra={"model": name, "version": evidence.get("version")})
        if self.audit is not None:
            self.audit.record_event(event, name, evidence)

    def _configured(self, bundle: VerifiedBundle) -> ModelConfig:
        """The config of the bundle's model, whose signer must still be trusted."""
        model_config = self.config.model(bundle.manifest.name)
        if model_config is None:
            raise UnknownModel(f"model {bundle.manifest.name!r} is not configured here")
        if not self.trust.trusts(bundle.signer_keyid):
            raise UntrustedKey(f"signing key {bundle.signer_keyid} is no longer trusted")
        return model_config

    def activate(self, bundle: VerifiedBundle) -> ServedModel:
        """Instantiate ``bundle`` with this site's mapping, then swap it in atomically.

        Everything that can fail (signer still trusted, module validation, mapping against
        the new schema) happens before the swap, so a bad bundle leaves the serving model
        untouched. The signer is checked against today's trust store: a bundle verified
        before a reload revoked its key is refused (UntrustedKey)."""
        with self._lifecycle_lock:
            model_config = self._configured(bundle)
            try:
                served = self._instantiate(model_config, bundle)
            except MappingError as error:
                if model_config.name not in self._served:  # say why at /readyz
                    version = bundle.manifest.version
                    self._unavailable = {
                        **self._unavailable,
                        model_config.name: f"{version}: {error}",
                    }
                raise
            self._serve(served)
            return served

    def _serve(self, served: ServedModel) -> ServedModel | None:
        """Swap ``served`` in for its model (activation, promotion); returns what it replaced."""
        previous = self._served.get(served.name)
        unavailable = {k: v for k, v in self._unavailable.items() if k != served.name}
        self._commit({**self._served, served.name: served}, unavailable)
        return previous

    def reconfigure(self, config: AgentConfig, trust: TrustStore | None = None) -> None:
        """Apply a reloaded config (SIGHUP) and its trust store, all or nothing.

        First every served model (and candidate) whose signer is still trusted is re-bound
        to its mapping file; a broken mapping raises and changes nothing. A candidate whose
        signer is revoked, or whose model is no longer configured, is dropped. Then a model
        whose signer is now revoked or removed is taken out of service (logged, counted) and
        the newest installed version that verifies under ``trust`` serves instead, or none; a model
        not served before (not installed, or signed by a key only now added) is loaded.
        Limits and listeners change only on restart."""
        trust = trust if trust is not None else self.trust
        with self._lifecycle_lock:
            kept: dict[str, ServedModel] = {}
            for model_config in config.models:
                served = self._served.get(model_config.name)
                if served is not None and trust.trusts(served.bundle.signer_keyid):
                    kept[served.name] = served.rebound(model_config)
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
            candidates = self._candidates.rebound(config, trust)
            self._commit(chosen, unavailable, config=config, trust=trust)
            self._candidates.replace(candidates)

    @property
    def unavailable(self) -> dict[str, str]:
        """Configured models that serve nothing, each with why (PHI-free: versions and
        error slugs only), for ``/readyz``."""
        return dict(self._unavailable)

    def _instantiate(self, model_config: ModelConfig, bundle: VerifiedBundle) -> ServedModel:
        manifest = bundle.manifest
        cache = ModuleCache(self.store.root / "cache", self.store.root / "state" / "compiled")
        runtime = WasmModel.load(bundle.model_bytes, limits=self.limits, cache=cache)
        runtime.self_test(len(manifest.inputs), len(manifest.outputs), manifest.reference_row())
        try:
            mapping = load_mapping(model_config.mapping, manifest)
        except MappingError as error:
            # config text, not patient data: ``file:line: feature 'x': why`` for the operator
            log.error(
                "site mapping does not fit the bundle",
                extra={"model": manifest.name, "version": manifest.version, "problems": str(error)},
            )
            raise
        explainer = load_explainer(bundle.files, manifest, self.limits)
        return ServedModel(model_config, bundle, runtime, mapping, explainer)

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
                # a mapping's problems name the file, line and feature: /readyz shows them
                why = str(error) if isinstance(error, MappingError) else error.reason
                refused.append(f"{version}: {why}")
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
