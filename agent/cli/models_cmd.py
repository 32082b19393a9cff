"""``edge-agent models list|pull|rollback --config FILE``: the operator's view of the store.

These act on the store on disk. A running agent picks up a version pulled or rolled back
here at its next restart (acting on the running agent through a local admin socket is a
later step).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.bundle.trust import TrustStore
from agent.config import AgentConfig, load_config
from agent.registry.sources import open_source
from agent.registry.updater import Updater
from agent.store import BundleStore


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("models", help="list, pull and roll back installed model versions")
    group = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    listing = group.add_parser("list", help="installed versions of each model, active marked")
    _config_option(listing)
    listing.set_defaults(func=_list)

    pull = group.add_parser("pull", help="pull now from the configured registries")
    _config_option(pull)
    pull.add_argument("models", nargs="*", help="models to pull (default: all configured)")
    pull.set_defaults(func=_pull)

    rollback = group.add_parser(
        "rollback", help="activate the previous (or a given) installed version"
    )
    _config_option(rollback)
    rollback.add_argument("model")
    rollback.add_argument("--to", metavar="VERSION", help="installed version to activate")
    rollback.set_defaults(func=_rollback)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the agent's config file")


def _open(args: argparse.Namespace) -> tuple[AgentConfig, BundleStore]:
    config = load_config(args.config)
    return config, BundleStore.from_config(config.store)


def _list(args: argparse.Namespace) -> int:
    config, store = _open(args)
    names = sorted({m.name for m in config.models} | set(store.models()))
    for name in names:
        active = store.active_version(name)
        versions = [f"*{v}" if v == active else v for v in store.versions(name)]
        where = "" if config.model(name) else "  (not configured)"
        print(f"{name}: {' '.join(versions) if versions else 'none installed'}{where}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    config, store = _open(args)
    models = args.models or [m.name for m in config.models]
    sources = [open_source(r) for r in config.registries]
    try:
        updater = Updater(
            sources,
            store,
            TrustStore(config.trust),
            config.resolved_limits,
            models,
            lambda _name, _bundle: None,
            registry_of={m.name: m.registry for m in config.models if m.registry},
        )
        results = updater.pull_once()
    finally:
        for source in sources:
            source.close()
    for result in results:
        version = f" {result.version}" if result.version else ""
        detail = "" if result.reason == "ok" else f" ({result.reason})"
        print(f"{result.model}: {result.outcome}{version}{detail} [{result.registry or '-'}]")
    return 0 if all(r.outcome in ("installed", "up_to_date") for r in results) else 1


def _rollback(args: argparse.Namespace) -> int:
    config, store = _open(args)
    target = args.to or store.previous_version(args.model)
    # Refuse to switch to a version that no longer verifies (changed at rest, key revoked).
    store.load(args.model, TrustStore(config.trust), config.resolved_limits, version=target)
    now = store.rollback(args.model, target)
    print(f"{args.model}: active version is now {now} (restart the agent to serve it)")
    return 0
