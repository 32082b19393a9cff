"""The local admin channel: ``edge-agent models list|pull|rollback`` on a running agent.

A Unix socket in the store folder (``<store.root>/admin.sock``, mode 0600): only the
agent's own user (and root) can connect, and nothing on the network can reach it. One JSON
request line, one JSON answer line. When no agent answers, the CLI acts on the store on disk
with the same ``ModelOperations``, so both paths print the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle
from agent.config import AgentConfig
from agent.deadline import call_with_deadline
from agent.errors import AgentError
from agent.registry.updater import PullResult
from agent.store import BundleStore

log = logging.getLogger(__name__)

SOCKET_NAME = "admin.sock"
REQUEST_MAX = 4096  # bytes: one admin request line


def socket_path(config: AgentConfig) -> Path:
    return config.store.root.resolve() / SOCKET_NAME


@dataclass
class Answer:
    ok: bool
    lines: list[str]
    error: bool = False  # the request was refused (bad command, unknown version, ...)

    def to_json(self) -> bytes:
        body = {"ok": self.ok, "lines": self.lines, "error": self.error}
        return (json.dumps(body) + "\n").encode()

    @property
    def exit_code(self) -> int:
        return 2 if self.error else 0 if self.ok else 1


class ModelOperations:
    """What an operator can do to the models; ``activate`` swaps a version into a running
    pipeline (None when the agent is stopped and only the store changes).

    ``config`` and ``trust`` are what the agent runs with now: the daemon hands a reloaded
    pair to ``reconfigure``, so a rollback never brings back a bundle whose key a reload
    revoked."""

    def __init__(
        self,
        config: AgentConfig,
        store: BundleStore,
        pull_once: Callable[[list[str]], list[PullResult]],
        activate: Callable[[VerifiedBundle], object] | None = None,
        served: Callable[[], dict[str, str]] | None = None,
        trust: TrustStore | None = None,
    ) -> None:
        self.config = config
        self.trust = trust if trust is not None else TrustStore(config.trust)
        self.store = store
        self._pull_once = pull_once
        self._activate = activate
        self._served = served

    def reconfigure(self, config: AgentConfig, trust: TrustStore) -> None:
        """Take a reloaded config and trust store (both replaced as one pair)."""
        self.config, self.trust = config, trust

    def run(self, request: dict[str, Any]) -> Answer:
        command = request.get("command")
        try:
            if command == "list":
                return self.listing()
            if command == "pull":
                return self.pull([str(m) for m in request.get("models") or []])
            if command == "rollback":
                version = request.get("version")
                return self.rollback(str(request.get("model")), str(version) if version else None)
        except AgentError as error:
            return Answer(False, [f"error: {error}"], error=True)
        return Answer(False, [f"error: unknown admin command {command!r}"], error=True)

    def listing(self) -> Answer:
        served = self._served() if self._served else {}
        names = sorted({m.name for m in self.config.models} | set(self.store.models()))
        lines = []
        for name in names:
            active = self.store.active_version(name)
            versions = [f"*{v}" if v == active else v for v in self.store.versions(name)]
            notes = "" if self.config.model(name) else "  (not configured)"
            if name in served:
                notes += f"  (serving {served[name]})"
            lines.append(f"{name}: {' '.join(versions) if versions else 'none installed'}{notes}")
        return Answer(True, lines)

    def pull(self, models: list[str]) -> Answer:
        """One pull now, answered within ``limits.pull_timeout`` even if a registry hangs
        (the pull then finishes in the background)."""
        wanted = models or [m.name for m in self.config.models]
        timeout = self.config.resolved_limits.pull_timeout
        try:
            results = call_with_deadline(
                lambda: self._pull_once(wanted), timeout, name="edge-agent-admin-pull"
            )
        except TimeoutError:
            return Answer(False, [f"error: the pull did not finish within {timeout:g} s"])
        lines = []
        for result in results:
            version = f" {result.version}" if result.version else ""
            detail = "" if result.reason == "ok" else f" ({result.reason})"
            lines.append(
                f"{result.model}: {result.outcome}{version}{detail} [{result.registry or '-'}]"
            )
        return Answer(all(r.outcome in ("installed", "up_to_date") for r in results), lines)

    def rollback(self, model: str, version: str | None) -> Answer:
        target = version or self.store.previous_version(model)
        # refuse a version that no longer verifies (changed at rest, key revoked)
        config, trust = self.config, self.trust
        bundle = self.store.load(model, trust, config.resolved_limits, version=target)
        if self._activate is not None:
            self._activate(bundle)  # instantiate first: a broken module changes nothing
        now = self.store.rollback(model, target)
        where = "serving it now" if self._activate else "the agent serves it when started"
        return Answer(True, [f"{model}: active version is now {now} ({where})"])


class AdminServer:
    """Serves ``ModelOperations`` on the admin socket; ``start()`` / ``stop()``."""

    def __init__(self, path: Path, operations: ModelOperations) -> None:
        self._path = path
        self._operations = operations
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # the socket is created 0600
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self._path), limit=REQUEST_MAX
            )
        finally:
            os.umask(old_umask)
        log.info("admin socket listening", extra={"path": str(self._path)})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError
            except ValueError:
                answer = Answer(False, ["error: the request must be one JSON object"], error=True)
            else:
                # a daemon thread, not the loop's executor: shutdown never waits on it
                answer = await _in_daemon_thread(lambda: self._operations.run(request))
            writer.write(answer.to_json())
            await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()


async def _in_daemon_thread(action: Callable[[], Answer]) -> Answer:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Answer] = loop.create_future()

    def hand_over(answer: Answer) -> None:
        if not future.done():
            future.set_result(answer)

    def run() -> None:
        try:
            answer = action()
        except Exception:
            log.exception("admin command crashed")
            answer = Answer(False, ["error: the agent failed to carry out the command"])
        with contextlib.suppress(RuntimeError):  # the loop closed: the agent stopped
            loop.call_soon_threadsafe(hand_over, answer)

    threading.Thread(target=run, name="edge-agent-admin", daemon=True).start()
    return await future


def ask_agent(path: Path, request: dict[str, Any], timeout: float = 330.0) -> Answer | None:
    """The running agent's answer, or None when no agent listens on ``path``. The
    default ``timeout`` outlasts the agent's own ``limits.pull_timeout`` default."""
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # a stale socket file: the agent is not running
        sock.sendall((json.dumps(request) + "\n").encode())
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return Answer(False, [f"error: the agent did not answer within {timeout:g} s"])
    reply = json.loads(data)
    lines = [str(x) for x in reply.get("lines", [])]
    return Answer(bool(reply.get("ok")), lines, bool(reply.get("error")))
