"""One atheris (libFuzzer) run of one target: ``python fuzz/harness.py TARGET [libFuzzer
flags] [CORPUS_DIR...]``. ``fuzz/run.py`` starts it with a time bound and a corpus.

The agent's own modules and hl7apy (pure Python, reached by the HL7 target) are
instrumented for coverage feedback; a typed ``AgentError`` is a clean refusal, anything
else propagates and libFuzzer records the input as a crash.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["agent", "hl7apy"]):
    from targets import TARGETS

    from agent.errors import AgentError

    # The pipeline imports its readers lazily: run every seed once inside this block so
    # that those modules are imported, and so instrumented, too.
    for _target in TARGETS.values():
        for _seed in _target.seeds():
            with contextlib.suppress(AgentError):
                _target.run(_seed)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: harness.py {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus...]")
    run = TARGETS[sys.argv[1]].run

    def one_input(data: bytes) -> None:
        with contextlib.suppress(AgentError):
            run(data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
