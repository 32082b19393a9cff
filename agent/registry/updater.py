"""The pull loop: poll registries, verify, install, hand new bundles to the pipeline.

One pull, per model: fetch and verify each registry's signed index (freshness, rollback,
signature), take the highest version any registry offers for the model, and if it is newer
than anything ever installed, download it under a hard byte cap, check the archive against
the index (size, SHA-256), unpack, verify the bundle (signature, trusted key, every file),
check that it is the bundle the index announced (manifest SHA-256, name, version), install
it, hand it to ``on_installed`` (the pipeline instantiates it and swaps it in) and only
then make it the store's active version. If ``on_installed`` raises an AgentError (the
module breaks the ABI, the site mapping does not fit the new schema), the version is
discarded from the store and tried again at the next poll, so it goes live once the site
is fixed.

A failed or refused pull changes nothing that serves: the active version and the served
model stay as they were. Outcomes are reported per model as ``PullResult`` through
``on_result`` and logged with the error's PHI-free ``reason`` slug.

An operator's rollback sticks: the updater installs only versions newer than the highest
ever installed, so after ``edge-agent models rollback`` the newer version is not pulled
again. Publishing a still newer version moves the model forward.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

from agent.bundle.manifest import SemVer
from agent.bundle.signing import SIGNATURE_DOCUMENT_MAX
from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle, verify_bundle
from agent.errors import (
    AgentError,
    BundleError,
    RegistryError,
    SizeLimitExceeded,
    StoreError,
)
from agent.limits import Limits
from agent.registry.config import RegistryConfig
from agent.registry.index import (
    INDEX_FILE,
    INDEX_SIGNATURE_FILE,
    IndexEntry,
    RegistryIndex,
    verify_index,
)
from agent.registry.sources import RegistrySource, open_source, with_retries
from agent.store import BundleStore

if TYPE_CHECKING:
    from agent.config import AgentConfig

log = logging.getLogger(__name__)

PullOutcome = Literal["installed", "up_to_date", "refused", "failed"]


@dataclass(frozen=True)
class PullResult:
    """What one pull did for one model. ``reason`` is ``ok`` or the error's slug."""

    model: str
    registry: str | None  # the registry that answered for the model (None: none did)
    outcome: PullOutcome
    reason: str = "ok"
    version: str | None = None  # installed, or the newest already installed


class _Refused(Exception):
    """Carries a refusal raised by ``on_installed`` (the pipeline could not use the bundle)."""

    def __init__(self, error: AgentError) -> None:
        super().__init__(str(error))
        self.error = error


class Updater:
    """Pulls ``models`` from ``sources``; ``start``/``stop`` run it in a background thread.

    ``registry_of`` pins a model to one registry by name; an unpinned model takes the
    highest version any source offers (all sources are verified the same way, against the
    same trust store). ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        sources: Sequence[RegistrySource],
        store: BundleStore,
        trust: TrustStore,
        limits: Limits,
        models: Sequence[str],
        on_installed: Callable[[str, VerifiedBundle], object],
        *,
        on_result: Callable[[PullResult], None] | None = None,
        registry_of: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sources = list(sources)
        self._store = store
        self._trust = trust
        self._limits = limits
        self._models = list(models)
        self._on_installed = on_installed
        self._on_result = on_result
        self._registry_of = dict(registry_of or {})
        self._clock = clock
        self._pull_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pull ---------------------------------------------------------------------
    def pull_once(self) -> list[PullResult]:
        """Pull every model from every source once; one result per model."""
        results, _ = self._pull(self._sources)
        return results

    def _serves(self, source: RegistrySource, model: str) -> bool:
        pinned = self._registry_of.get(model)
        return pinned is None or pinned == source.config.name

    def _pull(self, sources: Sequence[RegistrySource]) -> tuple[list[PullResult], set[str]]:
        """Pull from ``sources``; return the results and the names of sources that failed."""
        with self._pull_lock:
            offers: dict[str, list[tuple[RegistrySource, IndexEntry]]] = {}
            errors: dict[str, AgentError] = {}
            failed: set[str] = set()
            for source in sources:
                try:
                    index = self._fetch_index(source)
                except OSError as exc:  # the store could not record the index version
                    log.exception("registry state write failed")
                    errors[source.config.name] = StoreError(str(exc))
                    failed.add(source.config.name)
                    continue
                except AgentError as exc:
                    log.warning(
                        "registry index refused or unreachable",
                        extra={"registry": source.config.name, "reason": exc.reason},
                    )
                    errors[source.config.name] = exc
                    if not isinstance(exc, BundleError):
                        failed.add(source.config.name)
                    continue
                for model in self._models:
                    entry = index.latest(model)
                    if entry is not None and self._serves(source, model):
                        offers.setdefault(model, []).append((source, entry))
            results = []
            for model in self._models:
                relevant = [s for s in sources if self._serves(s, model)]
                if not relevant:
                    continue
                result = self._pull_model(model, offers.get(model, []), relevant, errors)
                if result.outcome == "failed" and result.registry is not None:
                    failed.add(result.registry)
                results.append(result)
        for result in results:
            self._report(result)
        return results, failed

    def _fetch_index(self, source: RegistrySource) -> RegistryIndex:
        config = source.config
        index_bytes = self._fetch(source, INDEX_FILE, self._limits.registry_index_max)
        signature = self._fetch(source, INDEX_SIGNATURE_FILE, SIGNATURE_DOCUMENT_MAX)
        index = verify_index(
            index_bytes,
            signature,
            self._trust,
            now=self._clock(),
            min_version=self._store.last_index_version(config.name),
            limits=self._limits,
        )
        self._store.record_index_version(config.name, index.version)
        return index

    @staticmethod
    def _fetch(source: RegistrySource, location: str, max_bytes: int) -> bytes:
        return with_retries(
            lambda: source.fetch(location, max_bytes),
            retries=source.config.retries,
            delay=source.config.retry_delay,
        )

    def _pull_model(
        self,
        model: str,
        offers: list[tuple[RegistrySource, IndexEntry]],
        relevant: list[RegistrySource],
        errors: Mapping[str, AgentError],
    ) -> PullResult:
        if not offers:
            for source in relevant:
                error = errors.get(source.config.name)
                if error is not None:
                    return _result_of_error(model, source.config.name, error)
            return _result_of_error(
                model, None, RegistryError(f"no registry lists model {model!r}")
            )
        source, entry = max(offers, key=lambda offer: offer[1].semver)
        registry = source.config.name
        highest = self._store.highest_installed(model)
        if highest is not None and entry.semver <= SemVer(highest):
            return PullResult(model, registry, "up_to_date", version=highest)
        try:
            verified = self._download(source, model, entry)
            self._store.install(verified)
            try:
                self._on_installed(model, verified)
            except Exception as exc:
                self._store.discard(model, entry.version, floor=highest)
                if not isinstance(exc, AgentError):
                    log.exception("new bundle could not be put in service", extra={"model": model})
                    return PullResult(model, registry, "failed", "internal", entry.version)
                raise _Refused(exc) from exc
            self._store.activate(model, entry.version)
        except _Refused as refused:
            return PullResult(model, registry, "refused", refused.error.reason, entry.version)
        except AgentError as exc:
            return _result_of_error(model, registry, exc, entry.version)
        except OSError:
            log.exception("bundle store write failed", extra={"model": model})
            return PullResult(model, registry, "failed", StoreError.reason, entry.version)
        return PullResult(model, registry, "installed", version=entry.version)

    def _download(self, source: RegistrySource, model: str, entry: IndexEntry) -> VerifiedBundle:
        """Fetch, check against the index, unpack and verify one bundle.

        Stops: endless or oversized downloads (the cap is the size the signed index
        states, and never more than ``limits.bundle_download_max``); content other than
        what the index pins (DigestMismatch, checked by the source: the archive's SHA-256,
        or for OCI the image manifest digest and each layer digest); and a validly signed
        bundle that is not
        the one announced, e.g. an older signed bundle served under the new entry
        (BundleError when manifest digest, name or version disagree with the index).
        """
        cap = self._limits.bundle_download_max
        if entry.size > cap:
            raise SizeLimitExceeded(f"{model} {entry.version} is larger than {cap} bytes")
        config = source.config
        files = with_retries(
            lambda: source.fetch_bundle(entry, self._limits),
            retries=config.retries,
            delay=config.retry_delay,
        )
        verified = verify_bundle(files, self._trust, limits=self._limits)
        manifest = verified.manifest
        if (
            verified.digest != entry.manifest_sha256
            or manifest.name != model
            or manifest.semver != entry.semver
        ):
            raise BundleError(f"{model} {entry.version}: bundle is not the one the index lists")
        return verified

    def _report(self, result: PullResult) -> None:
        level = logging.INFO if result.outcome in ("installed", "up_to_date") else logging.WARNING
        log.log(
            level,
            "bundle pull",
            extra={
                "model": result.model,
                "registry": result.registry,
                "outcome": result.outcome,
                "reason": result.reason,
                "version": result.version,
            },
        )
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:
                log.exception("pull result callback failed")

    # --- background polling -----------------------------------------------------------
    def start(self, *, pull_now: bool = False) -> None:
        """Poll in a daemon thread: each registry at its ``poll_interval``, its wait
        doubling after each failed poll up to ``backoff_max``. The first poll comes at once
        with ``pull_now``, else one interval after ``start``."""
        if self._thread is not None or not self._sources:
            return
        self._stop_event.clear()
        self._thread = threading.Thread(
            target=self._run, args=(pull_now,), name="edge-agent-updater", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling; a pull in progress finishes (or times out) first."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self, pull_now: bool) -> None:
        now = time.monotonic()
        due = {
            s.config.name: now + (0 if pull_now else s.config.poll_interval) for s in self._sources
        }
        failures = dict.fromkeys(due, 0)
        while True:
            wait = max(0.0, min(due.values()) - time.monotonic())
            if self._stop_event.wait(wait):
                return
            now = time.monotonic()
            ready = [s for s in self._sources if due[s.config.name] <= now]
            try:
                _, failed = self._pull(ready)
            except Exception:  # a bug must not end polling for good
                log.exception("pull crashed")
                failed = {s.config.name for s in ready}
            for source in ready:
                name = source.config.name
                failures[name] = failures[name] + 1 if name in failed else 0
                delay = poll_delay(source.config, failures[name])
                due[name] = time.monotonic() + delay * (1 + random.random() / 10)


def poll_delay(config: RegistryConfig, failures: int) -> float:
    """Seconds until the next poll of a registry after ``failures`` failed polls in a row:
    ``poll_interval`` when all is well, doubling per failure, capped at ``backoff_max``
    (never below ``poll_interval``). The caller adds up to 10% jitter."""
    delay: float = config.poll_interval * 2.0 ** min(failures, 32)
    return min(delay, max(config.backoff_max, config.poll_interval))


def _result_of_error(
    model: str, registry: str | None, error: AgentError, version: str | None = None
) -> PullResult:
    outcome: PullOutcome = "refused" if isinstance(error, BundleError) else "failed"
    return PullResult(model, registry, outcome, error.reason, version)


class _PullMonitor(Protocol):
    def observe_pull(
        self,
        model: str,
        registry: str,
        outcome: Literal["updated", "current", "failed"],
        reason: str | None = None,
    ) -> None: ...


class _Pipeline(Protocol):
    store: BundleStore
    trust: TrustStore
    limits: Limits

    @property
    def monitor(self) -> _PullMonitor: ...

    def activate(self, bundle: VerifiedBundle) -> object: ...


_MONITOR_OUTCOME: dict[PullOutcome, Literal["updated", "current", "failed"]] = {
    "installed": "updated",
    "up_to_date": "current",
    "refused": "failed",
    "failed": "failed",
}


def build_updater(config: AgentConfig, pipeline: _Pipeline) -> Updater:
    """Wire an Updater from the agent config: a source per registry, every configured
    model (pinned to its ``registry`` when it names one), new bundles handed to
    ``pipeline.activate`` and outcomes counted by ``pipeline.monitor``."""
    sources = [open_source(registry) for registry in config.registries]
    monitor = pipeline.monitor

    def count(result: PullResult) -> None:
        monitor.observe_pull(
            result.model,
            result.registry or "none",
            _MONITOR_OUTCOME[result.outcome],
            None if result.reason == "ok" else result.reason,
        )

    return Updater(
        sources,
        pipeline.store,
        pipeline.trust,
        pipeline.limits,
        [m.name for m in config.models],
        lambda _name, bundle: pipeline.activate(bundle),
        on_result=count,
        registry_of={m.name: m.registry for m in config.models if m.registry is not None},
    )
