"""``edge-agent serve --config FILE``: run the agent in the foreground (systemd's ExecStart)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("serve", help="run the agent (HTTP, MLLP, drop folder, pulls)")
    parser.add_argument("--config", "-c", type=Path, required=True, help="agent config YAML")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from agent.daemon import serve

    return serve(args.config)
