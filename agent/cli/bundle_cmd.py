"""``edge-agent bundle ...``: build and predict (compiler, runtime) and sign, verify,
inspect, publish (trust, registries) — registered from two modules owned by those parts."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli import bundle_build_cmd, bundle_trust_cmd


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("bundle", help="build, sign, verify, inspect, run and publish bundles")
    group = parser.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    bundle_build_cmd.register(group)
    bundle_trust_cmd.register(group)
