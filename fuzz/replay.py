"""Replay one input on one fuzz target with plain Python (no atheris), to see the
traceback of a crash: ``.venv/bin/python fuzz/replay.py TARGET FILE``. Exit 0 when the
target accepts or cleanly refuses (AgentError) the input."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from targets import TARGETS

from agent.errors import AgentError


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in TARGETS:
        print(f"usage: replay.py {{{','.join(TARGETS)}}} FILE", file=sys.stderr)
        return 2
    try:
        TARGETS[sys.argv[1]].run(Path(sys.argv[2]).read_bytes())
    except AgentError as error:
        print(f"refused cleanly: {type(error).__name__} ({error.reason})")
    else:
        print("accepted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
