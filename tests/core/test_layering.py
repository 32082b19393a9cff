"""The layering the architecture promises, checked on a fresh interpreter: the pipeline
does not load the intake paths (nor watchdog), and no intake path imports the pipeline's
class: they know the agent only as a ``DataPlane``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "agent"


def _loaded_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=AGENT.parent,
    ).stdout
    return set(out.split())


def test_importing_the_pipeline_loads_no_intake_module_and_not_watchdog() -> None:
    loaded = _loaded_after("import agent.pipeline")
    assert "agent.pipeline" in loaded
    assert sorted(m for m in loaded if m.startswith(("agent.intake", "agent.batch"))) == []
    assert not [m for m in loaded if m.split(".")[0] in ("watchdog", "starlette", "uvicorn")]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_intake_or_batch_module_imports_the_pipeline() -> None:
    offenders = {
        str(path.relative_to(AGENT)): sorted(m for m in _imports(path) if m == "agent.pipeline")
        for folder in ("intake", "batch")
        for path in (AGENT / folder).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_intake_paths_do_not_import_each_other() -> None:
    paths = ("http", "mllp", "dropfolder")
    crossings = {}
    for own in paths:
        for path in (AGENT / "intake" / own).rglob("*.py"):
            others = {
                m
                for m in _imports(path)
                for other in paths
                if other != own and m.startswith(f"agent.intake.{other}")
            }
            if others:
                crossings[str(path.relative_to(AGENT))] = sorted(others)
    assert crossings == {}
