"""The long-running agent: wires the parts together and alone owns the process signals.

Start order: config -> pipeline (models already in the store) -> updater (first pull at
once, in the background) -> intake paths -> READY=1. SIGHUP reloads the config and
mappings (a broken new config is refused and the old one kept); the first SIGTERM/SIGINT
drains in-flight work within ``limits.drain_timeout``, a second one forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry

from agent import logs, systemd
from agent.admin import AdminServer, ModelOperations, socket_path
from agent.config import AgentConfig, load_config
from agent.errors import AgentError
from agent.intake.dropfolder.folder import DropFolder
from agent.intake.http.app import create_app
from agent.intake.mllp.listener import MllpListener
from agent.pipeline import ScoringPipeline
from agent.registry.updater import PullResult, Updater, build_updater

log = logging.getLogger(__name__)


class _OwnSignalsServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
        self._http: _OwnSignalsServer | None = None
        self._mllp: MllpListener | None = None
        self._drop: DropFolder | None = None
        self._admin = AdminServer(
            socket_path(self.config),
            ModelOperations(
                self.config,
                self.pipeline.store,
                self._pull_now,
                activate=self.pipeline.activate,
                served=lambda: {s.name: s.version for s in self.pipeline.served_models()},
            ),
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

        try:
            await asyncio.to_thread(self.updater.pull_once)
        except Exception:  # a bug in one pull must not keep the installed models from serving
            log.exception("first pull crashed; serving the versions the store holds")
        self.updater.start()
        await self._admin.start()
        http_task = await self._start_http()
        if self.config.mllp.enabled:
            self._mllp = MllpListener(self.config.mllp, self.pipeline, self.pipeline.limits)
            await self._mllp.start()
        if self.config.drop_folder.enabled:
            self._drop = DropFolder(self.config.drop_folder, self.pipeline, self.pipeline.limits)
            self._drop.start()

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
        app = create_app(self.pipeline, http)
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
            timeout_graceful_shutdown=int(self.pipeline.limits.drain_timeout),
            server_header=False,
        )
        self._http = _OwnSignalsServer(server_config)
        task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if task.done():
                task.result()  # re-raise the bind error
                raise AgentError(f"HTTP server on {http.host}:{http.port} did not start")
            await asyncio.sleep(0.01)
        log.info("http listening", extra={"host": http.host, "port": http.port})
        return task

    async def _drain(self, http_task: asyncio.Task[None] | None) -> None:
        timeout = self.pipeline.limits.drain_timeout
        if self._http is not None and http_task is not None:
            self._http.should_exit = True
            try:
                await asyncio.wait_for(http_task, timeout)
            except TimeoutError:
                self._http.force_exit = True
        if self._mllp is not None:
            await self._mllp.stop()
        if self._drop is not None:
            await asyncio.to_thread(self._drop.stop)
        await asyncio.to_thread(self.updater.stop)
        await self._admin.stop()

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
        systemd.notify("RELOADING=1")
        try:
            new_config = load_config(self.config_path)
            self.pipeline.reconfigure(new_config)
        except AgentError as error:
            log.error(
                "reload refused; the running configuration is kept", extra={"reason": error.reason}
            )
            log.error(str(error))
        else:
            self.config = new_config
            log.info("configuration reloaded")
        systemd.notify("READY=1")

    async def _watchdog(self) -> None:
        interval = systemd.watchdog_interval()
        if interval is None:
            return
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def serve(config_path: Path) -> int:
    """Run the agent until it is told to stop; the process exit code."""
    daemon = Daemon(config_path)
    return asyncio.run(daemon.run())
