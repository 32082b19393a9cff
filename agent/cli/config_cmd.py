"""``edge-agent config check FILE``: validate a config (and the mappings it names) without
starting anything; the same checks ``serve`` runs first."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.config import load_config


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("config", help="check an agent configuration")
    group = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = group.add_parser("check", help="validate a config file; exit 2 if invalid")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    missing = [str(m.mapping) for m in config.models if not m.mapping.is_file()]
    if missing:
        print(f"{args.file}: mapping file not found: {', '.join(missing)}")
        return 2
    names = ", ".join(m.name for m in config.models)
    print(f"{args.file}: OK ({len(config.models)} model(s): {names})")
    return 0
