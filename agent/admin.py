"""The local admin channel: ``edge-agent models list|pull|rollback|compare|promote|abandon``
on a running agent.

A Unix socket in the store folder (``<store.root>/admin.sock``, mode 0600): only the
agent's own user (and root) can connect, and nothing on the network can reach it. One JSON
request line, one JSON answer line. When no agent answers, the CLI acts on the store on disk
with the same ``ModelOperations``, so both paths print the same thing. Comparing and promoting
a candidate need the running agent: its comparison lives in the agent's memory.
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
from typing import TYPE_CHECKING, Any, Protocol

from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle
from agent.config import AgentConfig
from agent.deadline import call_with_deadline
from agent.errors import AgentError, RolloutError
from agent.registry.updater import PullResult
from agent.store import BundleStore

if TYPE_CHECKING:
    from agent.rollout.candidates import Candidate, Promotion
    from agent.rollout.comparison import ComparisonReading
    from agent.rollout.gates import GateResult

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


class CandidateControl(Protocol):
    """The running pipeline's candidate operations (``agent.serving.ServedModels``)."""

    def review(self, name: str) -> tuple[Candidate, ComparisonReading, list[GateResult]]: ...

    def promote(self, name: str, *, force_reason: str | None = None) -> Promotion: ...

    def abandon(self, name: str) -> Candidate: ...

    def rolled_back(self, name: str, previous: str | None, version: str) -> None: ...


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
        candidates: CandidateControl | None = None,
    ) -> None:
        self.config = config
        self._candidates = candidates
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
            if command == "compare":
                return self.compare(str(request.get("model")))
            if command == "promote":
                reason = request.get("reason")
                force = bool(request.get("force"))
                return self.promote(str(request.get("model")), force, str(reason or ""))
            if command == "abandon":
                return self.abandon(str(request.get("model")))
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
            staged = self.store.candidate(name)
            if staged is not None:
                notes += f"  (candidate {staged[0]} since {staged[1]:%Y-%m-%d %H:%M} UTC)"
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
        previous = self.store.active_version(model)
        now = self.store.rollback(model, target)
        if self._candidates is not None:
            self._candidates.rolled_back(model, previous, now)
        where = "serving it now" if self._activate else "the agent serves it when started"
        return Answer(True, [f"{model}: active version is now {now} ({where})"])

    def compare(self, model: str) -> Answer:
        """The candidate's comparison with the active version, and each promotion gate."""
        control = self._running("compare")
        candidate, reading, gates = control.review(model)
        return Answer(True, _comparison_lines(model, candidate, reading) + _gate_lines(gates))

    def promote(self, model: str, force: bool, reason: str) -> Answer:
        """Promote when every gate passes; ``force`` needs a ``reason`` (audited)."""
        if force and not reason.strip():
            return Answer(
                False,
                ["error: --force needs --reason TEXT (it goes into the audit log)"],
                error=True,
            )
        control = self._running("promote")
        _, _, gates = control.review(model)  # no candidate: RolloutError, answered as such
        try:
            promotion = control.promote(model, force_reason=reason.strip() if force else None)
        except RolloutError as error:
            return Answer(False, [f"error: {error}", *_gate_lines(gates)])
        forced = (
            " (forced past failing gates)" if not all(g.passed for g in promotion.gates) else ""
        )
        return Answer(True, [f"{model}: {promotion.version} is now active{forced}"])

    def abandon(self, model: str) -> Answer:
        """Drop the candidate; with the agent stopped, clear the store's pointer."""
        if self._candidates is None:
            staged = self.store.candidate(model)
            if staged is None:
                return Answer(
                    False, [f"error: model {model!r} has no candidate version"], error=True
                )
            self.store.clear_candidate(model)
            return Answer(True, [f"{model}: candidate {staged[0]} abandoned"])
        dropped = self._candidates.abandon(model)
        return Answer(True, [f"{model}: candidate {dropped.served.version} abandoned"])

    def _running(self, what: str) -> CandidateControl:
        if self._candidates is None:
            raise RolloutError(
                f"{what} needs the running agent (the comparison is kept in its memory)"
            )
        return self._candidates


def _comparison_lines(model: str, candidate: Candidate, reading: ComparisonReading) -> list[str]:
    def num(value: float | None, spec: str = ".4f") -> str:
        return "-" if value is None else format(value, spec)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.3f}"

    mode = "canary" if candidate.canary else "shadow"
    skipped = ", ".join(f"{k} {v}" for k, v in reading.skipped.items())
    agreement = ", ".join(f"{k} {num(v, '.2%')}" for k, v in reading.agreement.items())
    latency = reading.latency_seconds
    return [
        f"{model}: candidate {candidate.served.version} ({mode}, staged "
        f"{candidate.since:%Y-%m-%d %H:%M} UTC)",
        f"  records compared: {reading.records} (skipped: {skipped})",
        f"  score correlation: {num(reading.correlation)}",
        f"  absolute difference: mean {num(reading.mean_abs_difference)}, "
        f"p99 {num(reading.p99_abs_difference)}",
        f"  label agreement: {agreement}",
        f"  score PSI (candidate vs active): {num(reading.psi)}",
        f"  latency p50/p99 ms: active {ms(latency['active']['p50'])}/"
        f"{ms(latency['active']['p99'])}, candidate {ms(latency['candidate']['p50'])}/"
        f"{ms(latency['candidate']['p99'])}",
    ]


def _gate_lines(gates: list[GateResult]) -> list[str]:
    return ["  gates:", *(f"    {g.line()}" for g in gates)]


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
