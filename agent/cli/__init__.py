"""The ``edge-agent`` command line. The only place that turns errors into exit codes.

Each command group lives in its own module exposing ``register(subparsers)``; a handler
returns the process exit code. Groups are imported lazily by name so that, say,
``edge-agent keys generate`` never imports the HTTP stack or the compiler.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agent import __version__
from agent.errors import AgentError

# command group -> module that registers it
_GROUPS: dict[str, str] = {
    "serve": "agent.cli.serve_cmd",
    "config": "agent.cli.config_cmd",
    "score": "agent.cli.score_cmd",
    "bundle": "agent.cli.bundle_cmd",
    "keys": "agent.cli.keys_cmd",
    "models": "agent.cli.models_cmd",
    "mapping": "agent.cli.mapping_cmd",
    "validate": "agent.cli.validate_cmd",
}


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="On-premise inference agent for clinical models."
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Register only the group asked for when we can tell, else all (for --help).
    wanted = [a for a in argv if not a.startswith("-")][:1]
    names = wanted if wanted and wanted[0] in _GROUPS else list(_GROUPS)
    for name in names:
        importlib.import_module(_GROUPS[name]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = _parser(args_list).parse_args(args_list)
    try:
        code: int = args.func(args)
    except AgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
