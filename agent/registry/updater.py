"""The pull loop: poll registries, verify, install, hand new bundles to the pipeline.

One pull, per model: fetch and verify each registry's signed index (freshness, rollback,
signature), take the highest version any registry offers for the model, and if it is newer
than anything ever installed, download it under a hard byte cap, check the archive against
the index (size, SHA-256), unpack, verify the bundle (signature, trusted key, every file),
check that it is the bundle the index announced (manifest SHA-256, name, version), install
it, hand it to ``on_installed`` (the pipeline instantiates it and swaps it in, or stages it
as the model's candidate under a shadow or canary rollout, answering ``"candidate"``) and
only then make it the store's active version (or its candidate). If ``on_installed``
raises an AgentError (the module breaks the ABI, the site mapping does not fit the new
schema), the version is discarded from the store and tried again at the next poll, so it
goes live once the site is fixed.

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
from agent.rollout.config import Placement
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


@dataclass(frozen=True)
class _Settings:
    """What a reload may change, swapped as one: a pull takes it once at its start."""

    sources: tuple[RegistrySource, ...]
    trust: TrustStore
    models: tuple[str, ...]
    registry_of: dict[str, str]

    def serves(self, source: RegistrySource, model: str) -> bool:
        pinned = self.registry_of.get(model)
        return pinned is None or pinned == source.config.name


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
        self._settings = _Settings(tuple(sources), trust, tuple(models), dict(registry_of or {}))
        self._store = store
        self._limits = limits
        self._on_installed = on_installed
        self._on_result = on_result
        self._clock = clock
        self._pull_lock = threading.Lock()
        self._settings_lock = threading.Lock()
        self._retired: list[RegistrySource] = []
        self._stopping = False
        self._repoll = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def reconfigure(
        self,
        sources: Sequence[RegistrySource],
        trust: TrustStore,
        models: Sequence[str],
        registry_of: Mapping[str, str] | None = None,
    ) -> None:
        """Take a reloaded config (SIGHUP) at once: the next pull, which the poller starts
        right away, uses these sources, keys and models. A pull already running finishes
        with what it started with; the replaced sources are closed once it has."""
        with self._settings_lock:
            old = self._settings
            self._settings = _Settings(
                tuple(sources), trust, tuple(models), dict(registry_of or {})
            )
            self._retired.extend(s for s in old.sources if s not in sources)
            self._repoll = True
        self._wake.set()

    # --- one pull ---------------------------------------------------------------------
    def pull_once(self) -> list[PullResult]:
        """Pull every model from every source once; one result per model."""
        results, _ = self._pull(None)
        return results

    def _pull(self, names: set[str] | None) -> tuple[list[PullResult], set[str]]:
        """Pull from the sources named ``names`` (None: all); return the results and the
        names of sources that failed. Registries are asked concurrently, each bounded by
        its own timeout, so one that does not answer delays no other."""
        with self._pull_lock:
            with self._settings_lock:
                settings = self._settings
                retired, self._retired = self._retired, []
            for source in retired:
                source.close()
            sources = [s for s in settings.sources if names is None or s.config.name in names]
            offers: dict[str, list[tuple[RegistrySource, IndexEntry]]] = {}
            errors: dict[str, AgentError] = {}
            failed: set[str] = set()
            for source, fetched in self._fetch_indexes(sources, settings.trust):
                if isinstance(fetched, OSError):  # the store could not record the version
                    log.error("registry state write failed", exc_info=fetched)
                    errors[source.config.name] = StoreError(str(fetched))
                    failed.add(source.config.name)
                    continue
                if isinstance(fetched, AgentError):
                    log.warning(
                        "registry index refused or unreachable",
                        extra={"registry": source.config.name, "reason": fetched.reason},
                    )
                    errors[source.config.name] = fetched
                    if not isinstance(fetched, BundleError):
                        failed.add(source.config.name)
                    continue
                for model in settings.models:
                    entry = fetched.latest(model)
                    if entry is not None and settings.serves(source, model):
                        offers.setdefault(model, []).append((source, entry))
            results = []
            for model in settings.models:
                relevant = [s for s in sources if settings.serves(s, model)]
                if not relevant:
                    continue
                result = self._pull_model(
                    model, offers.get(model, []), relevant, errors, settings.trust
                )
                if result.outcome == "failed" and result.registry is not None:
                    failed.add(result.registry)
                results.append(result)
        for result in results:
            self._report(result)
        return results, failed

    def _fetch_indexes(
        self, sources: Sequence[RegistrySource], trust: TrustStore
    ) -> list[tuple[RegistrySource, RegistryIndex | AgentError | OSError]]:
        """Every source's verified index (or why not), fetched concurrently on daemon
        threads, so a registry that hangs never holds the process at exit."""
        answers: list[RegistryIndex | BaseException | None] = [None] * len(sources)

        def fetch(slot: int, source: RegistrySource) -> None:
            try:
                answers[slot] = self._fetch_index(source, trust)
            except BaseException as exc:  # handed to the pulling thread below
                answers[slot] = exc

        threads = [
            threading.Thread(
                target=fetch, args=(slot, source), name="edge-agent-index", daemon=True
            )
            for slot, source in enumerate(sources)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        fetched: list[tuple[RegistrySource, RegistryIndex | AgentError | OSError]] = []
        for source, answer in zip(sources, answers, strict=True):
            if isinstance(answer, RegistryIndex | AgentError | OSError):
                fetched.append((source, answer))
            elif isinstance(answer, BaseException):
                raise answer
        return fetched

    def _fetch_index(self, source: RegistrySource, trust: TrustStore) -> RegistryIndex:
        config = source.config
        index_bytes = self._fetch(source, INDEX_FILE, self._limits.registry_index_max)
        signature = self._fetch(source, INDEX_SIGNATURE_FILE, SIGNATURE_DOCUMENT_MAX)
        index = verify_index(
            index_bytes,
            signature,
            trust,
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
        trust: TrustStore,
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
            verified = self._download(source, model, entry, trust)
            self._store.install(verified)
            try:
                placed = self._on_installed(model, verified)
            except Exception as exc:
                self._store.discard(model, entry.version, floor=highest)
                if not isinstance(exc, AgentError):
                    log.exception("new bundle could not be put in service", extra={"model": model})
                    return PullResult(model, registry, "failed", "internal", entry.version)
                raise _Refused(exc) from exc
            if placed == "candidate":
                self._store.set_candidate(model, entry.version, self._clock())
            else:
                self._store.activate(model, entry.version)
        except _Refused as refused:
            return PullResult(model, registry, "refused", refused.error.reason, entry.version)
        except AgentError as exc:
            return _result_of_error(model, registry, exc, entry.version)
        except OSError:
            log.exception("bundle store write failed", extra={"model": model})
            return PullResult(model, registry, "failed", StoreError.reason, entry.version)
        return PullResult(model, registry, "installed", version=entry.version)

    def _download(
        self, source: RegistrySource, model: str, entry: IndexEntry, trust: TrustStore
    ) -> VerifiedBundle:
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
        verified = verify_bundle(files, trust, limits=self._limits)
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
        with ``pull_now``, else one interval after ``start``; after a ``reconfigure``, every
        registry is polled at once."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(pull_now,), name="edge-agent-updater", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling within ``timeout`` seconds: a pull in progress is abandoned to its
        daemon thread (every read it makes is bounded by its registry's timeout)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("a registry pull was still running at shutdown; abandoned")
            self._thread = None

    def _run(self, pull_now: bool) -> None:
        due: dict[str, float] = {}
        failures: dict[str, int] = {}
        first = pull_now
        while not self._stopping:
            with self._settings_lock:
                sources = self._settings.sources
                repoll, self._repoll = self._repoll, False
            now = time.monotonic()
            names = {s.config.name for s in sources}
            for source in sources:
                name = source.config.name
                if repoll or name not in due:
                    due[name] = now if (repoll or first) else now + source.config.poll_interval
                    failures.setdefault(name, 0)
            for gone in set(due) - names:
                del due[gone], failures[gone]
            first = False
            wait = max(0.0, min(due.values()) - now) if due else None
            if self._wake.wait(wait):
                self._wake.clear()
                continue
            now = time.monotonic()
            ready = {name for name, when in due.items() if when <= now}
            try:
                _, failed = self._pull(ready)
            except Exception:  # a bug must not end polling for good
                log.exception("pull crashed")
                failed = ready
            for source in sources:
                name = source.config.name
                if name not in ready:
                    continue
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

    def place(self, bundle: VerifiedBundle) -> Placement: ...


_MONITOR_OUTCOME: dict[PullOutcome, Literal["updated", "current", "failed"]] = {
    "installed": "updated",
    "up_to_date": "current",
    "refused": "failed",
    "failed": "failed",
}


def build_updater(config: AgentConfig, pipeline: _Pipeline) -> Updater:
    """Wire an Updater from the agent config: a source per registry, every configured
    model (pinned to its ``registry`` when it names one), new bundles handed to
    ``pipeline.place`` (served, or staged as the candidate) and outcomes counted by
    ``pipeline.monitor``."""
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
        lambda _name, bundle: pipeline.place(bundle),
        on_result=count,
        registry_of=pinned_registries(config),
    )


def pinned_registries(config: AgentConfig) -> dict[str, str]:
    """Model name -> the one registry it is pulled from, for the models that name one."""
    return {m.name: m.registry for m in config.models if m.registry is not None}
