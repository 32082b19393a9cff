"""``edge-agent models list|pull|rollback|compare|promote|abandon|history --config FILE``:
the operator's view of the models, their candidate versions and their history.

With the agent running, the command goes to it over its local admin socket
(``agent.admin``), so a pull or a rollback is served at once. With the agent stopped, the
same operations act on the store on disk, and the agent serves the result when it starts.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.admin import ModelOperations, ask_agent, socket_path
from agent.bundle.trust import TrustStore
from agent.config import AgentConfig, load_config
from agent.registry.sources import open_source
from agent.registry.updater import PullResult, Updater, pinned_registries
from agent.rollout.config import Placement, placement
from agent.rollout.history import in_force, read_history
from agent.store import BundleStore


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "models", help="list, pull, roll back, compare and promote model versions"
    )
    group = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    listing = group.add_parser("list", help="installed versions of each model, active marked")
    _config_option(listing)
    listing.set_defaults(func=_run, request=lambda a: {"command": "list"})

    pull = group.add_parser("pull", help="pull now from the configured registries")
    _config_option(pull)
    pull.add_argument("models", nargs="*", help="models to pull (default: all configured)")
    pull.set_defaults(func=_run, request=lambda a: {"command": "pull", "models": a.models})

    rollback = group.add_parser(
        "rollback", help="activate the previous (or a given) installed version"
    )
    _config_option(rollback)
    rollback.add_argument("model")
    rollback.add_argument("version", nargs="?", help="installed version to activate")
    rollback.add_argument("--to", metavar="VERSION", help="the same as VERSION")
    rollback.set_defaults(
        func=_run,
        request=lambda a: {"command": "rollback", "model": a.model, "version": a.version or a.to},
    )

    compare = group.add_parser(
        "compare", help="the candidate's comparison with the active version, and its gates"
    )
    _config_option(compare)
    compare.add_argument("model")
    compare.set_defaults(func=_run, request=lambda a: {"command": "compare", "model": a.model})

    promote = group.add_parser(
        "promote", help="make the candidate active when every promotion gate passes"
    )
    _config_option(promote)
    promote.add_argument("model")
    promote.add_argument(
        "--force", action="store_true", help="promote past failing gates (needs --reason)"
    )
    promote.add_argument("--reason", default="", help="why, for the audit log (with --force)")
    promote.set_defaults(
        func=_run,
        request=lambda a: {
            "command": "promote",
            "model": a.model,
            "force": a.force,
            "reason": a.reason,
        },
    )

    abandon = group.add_parser("abandon", help="drop the candidate; the active version stays")
    _config_option(abandon)
    abandon.add_argument("model")
    abandon.set_defaults(func=_run, request=lambda a: {"command": "abandon", "model": a.model})

    history = group.add_parser(
        "history", help="which version was active (and candidate) when, from the audit log"
    )
    _config_option(history)
    history.add_argument("model")
    history.add_argument(
        "--at",
        type=_moment,
        metavar="TIME",
        help="ISO 8601 time with its offset: name the versions in force then",
    )
    history.set_defaults(func=_history)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("give the time with its offset, e.g. 2026-12-04T14:00:00+01:00")
    return moment


def _history(args: argparse.Namespace) -> int:
    """Read from the audit log on disk: works with the agent running or stopped."""
    config = load_config(args.config)
    if config.audit.path is None:
        print("error: no audit log is configured (audit.path)", file=sys.stderr)
        return 2
    events = read_history(config.audit.path, args.model)
    if args.at is not None:
        state = in_force(events, args.at)
        active = state.active or "unknown (no audit entry before that time)"
        print(f"{args.model} at {args.at.isoformat()}: active {active}", end="")
        print(f", candidate {state.candidate}" if state.candidate else "")
        return 0
    for event in events:
        print(event.line())
    if not events:
        print(f"{args.model}: no lifecycle entries in the audit log")
    return 0


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the agent's config file")


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    request = args.request(args)
    # the agent answers a pull within its pull_timeout; allow for the answer to travel
    answer = ask_agent(
        socket_path(config), request, timeout=config.resolved_limits.pull_timeout + 30
    )
    if answer is None:
        answer = _offline(config).run(request)
    for line in answer.lines:
        print(line, file=sys.stdout if answer.ok else sys.stderr)
    return answer.exit_code


def _offline(config: AgentConfig) -> ModelOperations:
    """The operations on the store alone, for an agent that is not running."""
    store = BundleStore.from_config(config.store)

    def pull_once(models: list[str]) -> list[PullResult]:
        sources = [open_source(r) for r in config.registries]
        try:
            updater = Updater(
                sources,
                store,
                TrustStore(config.trust),
                config.resolved_limits,
                models,
                lambda name, _bundle: _placement(config, store, name),
                registry_of=pinned_registries(config),
            )
            return updater.pull_once()
        finally:
            for source in sources:
                source.close()

    return ModelOperations(config, store, pull_once)


def _placement(config: AgentConfig, store: BundleStore, name: str) -> Placement:
    """Where an offline pull puts a new version: as the running agent would."""
    model = config.model(name)
    mode = model.rollout if model is not None else "direct"
    return placement(mode, store.active_version(name) is not None)
