"""Candidate versions beside the served ones: which version is staged for each model, its
comparison with the active version, the promotion gates against it, and the audit entries
that staging, promoting and abandoning it leave (ADR 0010).

Apart from ``agent.serving`` so that the served set's lifecycle (load, activate, reload, fall
back) reads on its own. ``ServedModels`` owns one ``CandidateVersions`` and calls it under
its lifecycle lock: it instantiates every bundle staged here (module, mapping) and alone
swaps a promoted candidate into what serves, through the ``serve`` it hands to ``promote``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence, ValuesView
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from agent.errors import AgentError, RolloutError, UnknownModel
from agent.rollout.comparison import Comparison, ComparisonReading
from agent.rollout.gates import GateResult, LiveAuroc, evaluate

if TYPE_CHECKING:
    from agent.bundle.trust import TrustStore
    from agent.bundle.verify import VerifiedBundle
    from agent.config import AgentConfig, ModelConfig
    from agent.limits import Limits
    from agent.serving import ServedModel
    from agent.store import BundleStore

log = logging.getLogger(__name__)

Record = Callable[[str, str, dict[str, object]], None]  # (event, model, evidence): audited
Instantiate = Callable[["ModelConfig", "VerifiedBundle"], "ServedModel"]


@dataclass(frozen=True)
class Candidate:
    """A version staged beside the active one: scored in shadow (or answering a canary
    share) and compared, until it is promoted or abandoned."""

    served: ServedModel
    since: datetime  # when it was staged (kept in the store across restarts)
    comparison: Comparison
    against: str | None  # the active version it was staged beside, which it is compared with

    @property
    def canary(self) -> bool:
        """Whether it answers a share of patients (else it is scored in shadow only)."""
        return self.served.config.rollout == "canary"


@dataclass(frozen=True)
class Promotion:
    version: str  # now active
    gates: list[GateResult]  # as they stood (a forced promotion may have failing ones)


def _evidence(reading: ComparisonReading) -> dict[str, object]:
    """The comparison figures an audit entry keeps (no histograms: numbers that decide)."""
    evidence = reading.to_dict()
    for key in ("histogram_edges", "histograms"):
        evidence.pop(key)
    return evidence


class CandidateVersions:
    """The candidate staged for each model, in a dict replaced whole so that readers
    (scoring, metrics, the status page) take no lock; every change comes from the owning
    ``ServedModels`` under its lifecycle lock.

    ``config`` reads the owner's config as it stands (a reload replaces it); ``live_auroc``
    gives both versions' live AUROC for the gate that needs it."""

    def __init__(
        self,
        config: Callable[[], AgentConfig],
        store: BundleStore,
        limits: Limits,
        record: Record,
        live_auroc: Callable[[Candidate], LiveAuroc],
    ) -> None:
        self._config = config
        self._store = store
        self._limits = limits
        self._record = record
        self._live_auroc = live_auroc
        self._staged: dict[str, Candidate] = {}
        self._swap_lock = threading.Lock()

    def get(self, name: str) -> Candidate | None:
        """The candidate staged for ``name``, if any."""
        return self._staged.get(name)

    def values(self) -> ValuesView[Candidate]:
        """Every staged candidate, from one snapshot (a swap meanwhile changes nothing)."""
        return self._staged.values()

    def stage(self, served: ServedModel, active: ServedModel | None) -> Candidate:
        """Stage ``served`` (instantiated and checked by the owner) beside ``active``,
        replacing any earlier candidate of its model; audited as ``staging``."""
        candidate = self._new(served, datetime.now(UTC), active.version if active else None)
        with self._swap_lock:
            self._staged = {**self._staged, served.name: candidate}
        self._record(
            "staging",
            served.name,
            {
                "version": served.version,
                "bundle_digest": served.digest,
                "mode": served.config.rollout,
                "active_version": active.version if active else None,
            },
        )
        return candidate

    def restore(
        self,
        models: Sequence[ModelConfig],
        active: Mapping[str, ServedModel],
        trust: TrustStore,
        instantiate: Instantiate,
    ) -> None:
        """At start: stage again the candidate the store kept for each of ``models``
        (staged before the restart), unless it is what serves or no longer verifies."""
        self.replace(
            {
                c.served.name: c
                for m in models
                if (c := self._restored(m, active.get(m.name), trust, instantiate)) is not None
            }
        )

    def rebound(self, config: AgentConfig, trust: TrustStore) -> dict[str, Candidate]:
        """Each candidate bound to ``config``'s mapping file (a reload), for ``replace``
        once the served set is committed: one whose signer ``trust`` no longer trusts, or
        whose model is no longer configured, is left out; a mapping that no longer fits
        raises MappingError before anything changes."""
        candidates: dict[str, Candidate] = {}
        for model_config in config.models:
            staged = self._staged.get(model_config.name)
            if staged is None or not trust.trusts(staged.served.signer_keyid):
                continue
            served = staged.served.rebound(model_config)
            candidates[served.name] = Candidate(
                served, staged.since, staged.comparison, staged.against
            )
        return candidates

    def checkpoint(self) -> None:
        """Keep each candidate's comparison in the store (the shadow lane does every
        ``limits.comparison_checkpoint`` seconds, and the pipeline at its stop), so that a
        restart resumes the evidence gathered instead of starting again. Only numbers: the
        comparison holds no record, reference or identifier. orjson: 2 ms for a full window
        where the stdlib takes 21, holding the interpreter lock from the requests."""
        for candidate in self.values():
            kept = {
                "candidate": candidate.served.version,
                "digest": candidate.served.digest,
                "against": candidate.against,
                "state": candidate.comparison.state(),
            }
            try:
                self._store.keep_comparison(candidate.served.name, orjson.dumps(kept))
            except OSError as exc:  # a full disk costs the checkpoint, never the lane
                log.warning(
                    "candidate comparison not kept",
                    extra={"model": candidate.served.name, "error_type": type(exc).__name__},
                )

    def replace(self, candidates: dict[str, Candidate]) -> None:
        with self._swap_lock:
            self._staged = candidates

    def drop(self, name: str) -> Candidate | None:
        """Take ``name``'s candidate out (promoted or abandoned) and clear the store's
        pointer; the version stays installed."""
        with self._swap_lock:
            dropped = self._staged.get(name)
            self._staged = {k: v for k, v in self._staged.items() if k != name}
        self._store.clear_candidate(name)
        return dropped

    def review(self, name: str) -> tuple[Candidate, ComparisonReading, list[GateResult]]:
        """``name``'s candidate, its comparison now and every promotion gate against it."""
        candidate = self._need(name)
        reading = candidate.comparison.read()
        gates = candidate.served.config.gates
        live = self._live_auroc(candidate) if gates.max_auroc_drop is not None else None
        return (
            candidate,
            reading,
            evaluate(gates, reading, candidate.since, datetime.now(UTC), live),
        )

    def promote(
        self,
        name: str,
        force_reason: str | None,
        serve: Callable[[ServedModel], ServedModel | None],
    ) -> Promotion:
        """Hand ``name``'s candidate to ``serve`` (which swaps it into the served set and
        returns the version it replaced) when every gate passes, or whatever they say when
        ``force_reason`` is given; audited with the comparison and gates at this moment.
        RolloutError when there is no candidate or a gate fails (unforced)."""
        candidate, reading, results = self.review(name)
        failing = [r for r in results if not r.passed]
        if failing and force_reason is None:
            raise RolloutError(
                "promotion blocked by " + "; ".join(f"{r.name} ({r.detail})" for r in failing)
            )
        previous = serve(candidate.served)
        self.drop(name)
        self._record(
            "promotion",
            name,
            {
                "version": candidate.served.version,
                "bundle_digest": candidate.served.digest,
                "previous_version": previous.version if previous else None,
                "previous_digest": previous.digest if previous else None,
                "candidate_since": candidate.since.isoformat(),
                "comparison": _evidence(reading),
                "gates": [
                    {"name": r.name, "passed": r.passed, "detail": r.detail} for r in results
                ],
                "forced": force_reason is not None,
                "reason": force_reason,
            },
        )
        return Promotion(candidate.served.version, results)

    def abandon(self, name: str) -> Candidate:
        """Drop ``name``'s candidate (it stays installed and is not pulled again; a newer
        published version becomes the next candidate). Audited with the comparison."""
        candidate = self._need(name)
        self.drop(name)
        self._record(
            "abandonment",
            name,
            {
                "version": candidate.served.version,
                "bundle_digest": candidate.served.digest,
                "candidate_since": candidate.since.isoformat(),
                "comparison": _evidence(candidate.comparison.read()),
            },
        )
        return candidate

    def _need(self, name: str) -> Candidate:
        if self._config().model(name) is None:
            raise UnknownModel("no such model is served here")
        candidate = self._staged.get(name)
        if candidate is None:
            raise RolloutError(f"model {name!r} has no candidate version")
        return candidate

    def _new(self, served: ServedModel, since: datetime, against: str | None) -> Candidate:
        monitor = self._config().monitor
        comparison = Comparison(
            {"warning": served.cards.warning, "critical": served.cards.critical},
            window=self._limits.comparison_window,
            min_records=monitor.min_window_records,
            epsilon=monitor.psi_epsilon,
        )
        return Candidate(served, since, comparison, against)

    def _resume(self, candidate: Candidate) -> None:
        """Continue ``candidate``'s comparison from the store, when what was kept is this
        very bundle's against this very active version (anything else starts afresh)."""
        name = candidate.served.name
        try:
            text = self._store.comparison(name)
            kept = json.loads(text) if text is not None else None
            if (
                isinstance(kept, dict)
                and kept.get("digest") == candidate.served.digest
                and kept.get("against") == candidate.against
            ):
                candidate.comparison.resume(kept["state"])
                log.info("candidate comparison resumed", extra={"model": name})
        except (OSError, ValueError, KeyError) as exc:
            log.warning(
                "candidate comparison not resumed",
                extra={"model": name, "error_type": type(exc).__name__},
            )

    def _restored(
        self,
        model_config: ModelConfig,
        active: ServedModel | None,
        trust: TrustStore,
        instantiate: Instantiate,
    ) -> Candidate | None:
        """The store's candidate for ``model_config`` loaded and instantiated, or None when
        there is none, it is what serves, or it no longer verifies (logged)."""
        name = model_config.name
        try:
            staged = self._store.candidate(name)
            if staged is None or active is None or staged[0] == active.version:
                return None
            bundle = self._store.load(name, trust, self._limits, version=staged[0])
            candidate = self._new(instantiate(model_config, bundle), staged[1], active.version)
            self._resume(candidate)
            return candidate
        except AgentError as error:
            log.warning("model candidate not loaded", extra={"model": name, "reason": error.reason})
            return None
