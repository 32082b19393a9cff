"""The long-running agent: wires the parts together and alone owns the process signals.

Start order: config -> pipeline (models already in the store; a model whose active
version no longer verifies falls back or is marked unavailable, it never stops the agent)
-> admin socket and intake paths -> updater (first poll at once, in its own thread, every
registry concurrently and each read bounded in time, so no registry holds the listeners
down) -> READY=1.

SIGHUP reloads all or nothing: the new config, its trust store and registry sources are
built and the pipeline re-binds mappings and re-checks every served bundle's signer; only
when all of that succeeds do the pipeline, the updater and the admin channel take the new
config together. Otherwise the reload is refused and the running config stays whole.

The first SIGTERM/SIGINT drains in-flight work within ``limits.drain_timeout`` (a pull
still running is abandoned to its daemon thread, a request still scoring in a worker thread
is abandoned with the process), a second one forces the exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import NoReturn

import uvicorn
from prometheus_client import CollectorRegistry

from agent import logs, systemd
from agent.admin import AdminServer, ModelOperations, socket_path
from agent.bundle.trust import TrustStore
from agent.config import AgentConfig, load_config
from agent.errors import AgentError, ConfigError
from agent.intake.dropfolder.folder import DropFolder
from agent.intake.http.app import create_app, edge_refusals
from agent.intake.http.listener import HttpServer
from agent.intake.http.refusals import EdgeRefusals
from agent.intake.mllp.listener import MllpListener
from agent.pipeline import ScoringPipeline
from agent.registry.sources import open_source
from agent.registry.updater import PullResult, Updater, build_updater, pinned_registries

log = logging.getLogger(__name__)

_UPDATER_STOP_WAIT = 5.0  # seconds at most to let a pull finish at shutdown
_CANCEL_GRACE = 0.5  # seconds cancelled work gets to end, even at the drain bound
_THREAD_EXIT = 0.1  # seconds an idle worker thread gets to end once told to


class Daemon:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config: AgentConfig = load_config(config_path)
        logs.configure(self.config.logging.level, self.config.logging.format)
        self.registry = CollectorRegistry()
        self.pipeline = ScoringPipeline.from_config(self.config, self.registry)
        self.updater: Updater = build_updater(self.config, self.pipeline)
        self._stop = asyncio.Event()
        self._stopping = False
        self._reload_lock = threading.Lock()
        self._http: HttpServer | None = None
        self._edge_refusals: EdgeRefusals | None = None
        self.abandoned = 0  # tasks still running, or a busy executor, past the drain bound
        self.drain_deadline = 0.0  # time.monotonic() at which the drain bound ends
        self._mllp: MllpListener | None = None
        self._drop: DropFolder | None = None
        self._operations = ModelOperations(
            self.config,
            self.pipeline.store,
            self._pull_now,
            activate=self.pipeline.activate,
            served=lambda: {s.name: s.version for s in self.pipeline.served_models()},
            trust=self.pipeline.trust,
            candidates=self.pipeline,
        )
        self._admin = AdminServer(socket_path(self.config), self._operations)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

        self.pipeline.start()
        await self._admin.start()
        http_task = await self._start_http()
        if self.config.mllp.enabled:
            self._mllp = MllpListener(
                self.config.mllp, self.pipeline, self.pipeline.limits, self.config.records
            )
            await self._mllp.start()
        if self.config.drop_folder.enabled:
            self._drop = DropFolder(self.config.drop_folder, self.pipeline, self.pipeline.limits)
            self._drop.start()
        self.updater.start(pull_now=True)  # after the listeners: no registry holds them down

        systemd.notify("READY=1")
        watchdog = asyncio.create_task(self._watchdog())
        log.info("agent ready", extra={"count": len(self.pipeline.served_models())})
        await self._stop.wait()

        systemd.notify("STOPPING=1")
        log.info("draining", extra={"seconds": self.pipeline.limits.drain_timeout})
        watchdog.cancel()
        await self._drain(http_task)
        log.info("stopped")
        return 0

    async def _start_http(self) -> asyncio.Task[None] | None:
        http = self.config.http
        if not http.enabled:
            return None
        app = create_app(self.pipeline, lambda: self.config.http, self.registry)
        self._edge_refusals = edge_refusals(app)
        limits = self.pipeline.limits
        server_config = uvicorn.Config(
            app,
            host=http.host,
            port=http.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=str(http.tls_cert) if http.tls_cert else None,
            ssl_keyfile=str(http.tls_key) if http.tls_key else None,
            ssl_ca_certs=str(http.tls_client_ca) if http.tls_client_ca else None,
            ssl_cert_reqs=2 if http.tls_client_ca else 0,  # ssl.CERT_REQUIRED / CERT_NONE
            timeout_graceful_shutdown=int(limits.drain_timeout),
            timeout_keep_alive=max(1, round(limits.http_keep_alive_timeout)),
            server_header=False,
            # uvicorn's default trusts X-Forwarded-For from 127.0.0.1: any local process could
            # then name the client (the audit log's caller, the per-client concurrency bound)
            proxy_headers=False,
        )
        self._http = HttpServer(server_config, limits, self._edge_refusals.head_refused)
        task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if task.done():
                task.result()  # re-raise the bind error
                raise AgentError(f"HTTP server on {http.host}:{http.port} did not start")
            await asyncio.sleep(0.01)
        log.info("http listening", extra={"host": http.host, "port": http.port})
        return task

    async def _drain(self, http_task: asyncio.Task[None] | None) -> None:
        """Stops every part within one bound, ``limits.drain_timeout`` from the signal: the
        intake paths drain side by side, then the admin channel and the updater; what still
        runs at the bound is cancelled, and what cannot be (a worker thread scoring an
        abandoned request) is counted in ``abandoned`` for ``serve`` to leave behind."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pipeline.limits.drain_timeout
        stops: list[asyncio.Future[None]] = []
        if self._http is not None and http_task is not None:
            self._http.should_exit = True
            stops.append(http_task)
        if self._mllp is not None:
            stops.append(asyncio.ensure_future(self._mllp.stop()))
        if self._drop is not None:
            stops.append(asyncio.ensure_future(asyncio.to_thread(self._drop.stop)))
        if stops:
            await asyncio.wait(stops, timeout=_left(loop, deadline))
        if self._http is not None:
            self._http.force_exit = True
        if self._edge_refusals is not None:
            self._edge_refusals.flush()  # into the audit log's queue, which stops below
        await self._admin.stop()
        await asyncio.to_thread(self.pipeline.stop, _left(loop, deadline))
        # a pull that hangs is abandoned (daemon thread); the drain bound holds
        await loop.run_in_executor(
            None, self.updater.stop, min(_left(loop, deadline), _UPDATER_STOP_WAIT)
        )
        deadline = max(deadline, loop.time() + _CANCEL_GRACE)  # the grace, once, at most
        self.drain_deadline = time.monotonic() + _left(loop, deadline)
        self.abandoned = await _cancel_the_rest(loop, deadline)

    def _pull_now(self, models: list[str]) -> list[PullResult]:
        """An operator's ``models pull``: one pull of every model, reported for those asked."""
        return [r for r in self.updater.pull_once() if r.model in models]

    def _on_stop_signal(self) -> None:
        if self._stopping:
            log.warning("second stop signal: forcing exit")
            if self._http is not None:
                self._http.force_exit = True
            return
        self._stopping = True
        self._stop.set()

    def _on_reload_signal(self) -> None:
        # off the event loop: re-checking bundles and instantiating fallbacks takes time
        threading.Thread(target=self._reload, name="edge-agent-reload", daemon=True).start()

    def _reload(self) -> None:
        with self._reload_lock:
            systemd.notify("RELOADING=1")
            try:
                self._apply(load_config(self.config_path))
            except AgentError as error:
                log.error(
                    "reload refused; the running configuration is kept",
                    extra={"reason": error.reason},
                )
                log.error(str(error))
            except Exception:
                log.exception("reload refused; the running configuration is kept")
            else:
                log.info("configuration reloaded")
            systemd.notify("READY=1")

    def _apply(self, new_config: AgentConfig) -> None:
        """Everything that can fail is built first (trust store, registry sources, the
        pipeline's mappings and trust checks); the updater and the admin channel switch
        only once the pipeline has switched, so all parts run one config.

        The sections built at start (``restart_pending``) keep their running values, so
        that ``self.config`` says what runs, and a warning names them: a reload reported
        done must not have silently left a changed ``mllp.allowed_clients`` unapplied."""
        if new_config.store != self.config.store:
            raise ConfigError("store: a changed store takes effect only at a restart")
        pending = restart_pending(self.config, new_config)
        new_config = new_config.model_copy(
            update={section: getattr(self.config, section) for section in pending}
        )
        trust = TrustStore(new_config.trust)
        sources = [open_source(registry) for registry in new_config.registries]
        try:
            self.pipeline.reconfigure(new_config, trust)
        except BaseException:
            for source in sources:
                source.close()
            raise
        self.updater.reconfigure(
            sources, trust, [m.name for m in new_config.models], pinned_registries(new_config)
        )
        self._operations.reconfigure(new_config, trust)
        self.config = new_config
        if pending:
            log.warning(
                "reload: changed sections take effect only at a restart; they keep running as"
                " they were",
                extra={"sections": ", ".join(pending)},
            )

    async def _watchdog(self) -> None:
        interval = systemd.watchdog_interval()
        if interval is None:
            return
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


# Built when the agent starts (listeners, the audit log, the prediction store, the monitor,
# logging, the limits): a reload cannot change them in place.
_BUILT_AT_START = ("mllp", "drop_folder", "monitor", "logging", "audit", "performance", "limits")


def restart_pending(running: AgentConfig, new: AgentConfig) -> list[str]:
    """The sections of ``new`` that differ from ``running`` and only a restart applies.
    ``http`` is one unless only its bearer tokens changed: the guard reads those per
    request, so a leaked token removed from the config is refused from the reload on."""
    pending = [s for s in _BUILT_AT_START if getattr(new, s) != getattr(running, s)]
    tokens = {"bearer_token_sha256"}
    if new.http.model_dump(exclude=tokens) != running.http.model_dump(exclude=tokens):
        pending.insert(0, "http")
    return pending


def _left(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    return max(0.0, deadline - loop.time())


async def _cancel_the_rest(loop: asyncio.AbstractEventLoop, deadline: float) -> int:
    """Cancels every task still running (a request being scored, a connection) and shuts
    the default executor down, waiting for both until ``deadline``; how many tasks, plus
    the executor, did not finish. A task scoring
    in a worker thread does not end on cancel: the thread computes on, out of reach."""
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    for task in rest:
        task.cancel()
    pending: set[asyncio.Task[object]] = set()
    if rest:
        _, pending = await asyncio.wait(rest, timeout=_left(loop, deadline))
    try:
        await asyncio.wait_for(loop.shutdown_default_executor(), _left(loop, deadline))
    except TimeoutError:
        return len(pending) + 1
    return len(pending)


def serve(config_path: Path) -> int:
    """Run the agent until it is told to stop; the process exit code. When the drain left
    work behind (threads that cannot be stopped or joined), the process exits without
    waiting for it, so a stop never takes longer than the drain bound: what was abandoned
    was never answered, and clients retry it."""
    daemon = Daemon(config_path)
    with asyncio.Runner() as runner:
        code = runner.run(daemon.run())
        if daemon.abandoned:  # closing the runner would wait for the executor's threads
            _exit_abandoning(daemon.abandoned, code)
    # the runner's close told idle worker threads (Starlette's thread pool) to end; a busy
    # one ends only with its computation, and the interpreter would wait for it at exit
    busy = _threads_left_at(max(daemon.drain_deadline, time.monotonic() + _THREAD_EXIT))
    if busy:
        _exit_abandoning(busy, code)
    return code


def _threads_left_at(deadline: float) -> int:
    """Waits until ``deadline`` for the threads that would hold the interpreter's exit (not
    daemon threads); how many are still running then."""
    others = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sum(thread.is_alive() for thread in others)


def _exit_abandoning(count: int, code: int) -> NoReturn:
    log.warning("drain bound reached: work abandoned", extra={"count": count})
    logging.shutdown()
    os._exit(code)
