"""``edge-agent config check FILE``: validate a config, and each model's site mapping against
the bundle it will bind, without starting anything.

The bundle is the store's active version when one is installed; otherwise the newest that
the model's registries offer, downloaded into a scratch store and verified exactly as a pull
would, and never installed. A mapping that does not fit is reported ``file:line: feature:
what`` (exit 2), as the agent would refuse it at start or when the bundle arrives.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from agent.bundle.trust import TrustStore
from agent.bundle.verify import VerifiedBundle
from agent.config import AgentConfig, load_config
from agent.errors import AgentError, MappingError, StoreError
from agent.mapping import load_mapping
from agent.store import BundleStore


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("config", help="check an agent configuration")
    group = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = group.add_parser(
        "check", help="validate a config file and its mappings against their bundles; exit 2"
    )
    check.add_argument("file", type=Path)
    check.add_argument(
        "--offline",
        action="store_true",
        help="check mappings only against bundles in the store, never ask a registry",
    )
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    missing = [str(m.mapping) for m in config.models if not m.mapping.is_file()]
    if missing:
        print(f"{args.file}: mapping file not found: {', '.join(missing)}")
        return 2
    names = ", ".join(m.name for m in config.models)
    print(f"{args.file}: OK ({len(config.models)} model(s): {names})")
    problems = 0
    for line, fits in _mappings_against_bundles(config, offline=args.offline):
        print(line)
        problems += not fits
    return 2 if problems else 0


def _mappings_against_bundles(config: AgentConfig, *, offline: bool) -> list[tuple[str, bool]]:
    """One line per model: its mapping loaded against its bundle, and whether it fits."""
    trust = TrustStore(config.trust)
    limits = config.resolved_limits
    store = BundleStore.from_config(config.store)
    bundles: dict[str, tuple[VerifiedBundle, str]] = {}
    for model in config.models:
        try:
            bundle = store.load(model.name, trust, limits)
        except StoreError:
            continue
        bundles[model.name] = (bundle, "the store")
    absent = [m.name for m in config.models if m.name not in bundles]
    lines = []
    if absent and not offline and config.registries:
        try:
            bundles.update(_from_registries(config, absent, trust))
        except AgentError as error:  # the config is checked; the registry was not reachable
            lines.append((f"registries not asked ({error.reason}): {error}", True))
    for model in config.models:
        found = bundles.get(model.name)
        if found is None:
            lines.append(
                (
                    f"{model.name}: no bundle in the store or the registries yet; its "
                    "mapping is checked when one arrives",
                    True,
                )
            )
            continue
        bundle, where = found
        about = f"{model.name} {bundle.manifest.version} (from {where})"
        try:
            load_mapping(model.mapping, bundle.manifest)
        except MappingError as error:
            lines.append((f"{about}: the mapping does not fit:\n{error}", False))
            continue
        lines.append((f"{about}: the mapping binds all its inputs", True))
    return lines


def _from_registries(
    config: AgentConfig, models: list[str], trust: TrustStore
) -> dict[str, tuple[VerifiedBundle, str]]:
    """The newest bundle each registry offers for ``models``, pulled into a scratch store
    by the updater itself (same verification, nothing installed in the real store)."""
    from agent.registry.sources import open_source
    from agent.registry.updater import Updater, pinned_registries

    found: dict[str, tuple[VerifiedBundle, str]] = {}

    pinned = pinned_registries(config)

    def keep(name: str, bundle: VerifiedBundle) -> None:
        found[name] = (bundle, f"registry {pinned.get(name, 'offering it')}")

    with tempfile.TemporaryDirectory(prefix="edge-agent-check-") as scratch:
        sources = [open_source(registry) for registry in config.registries]
        updater = Updater(
            sources,
            BundleStore(Path(scratch)),
            trust,
            config.resolved_limits,
            models,
            keep,
            registry_of=pinned,
        )
        try:
            updater.pull_once()
        finally:
            for source in sources:
                source.close()
    return found
