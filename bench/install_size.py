"""Install size: what an operator's ``pip install`` puts on the server, per contender.

Each contender gets a fresh virtualenv (cached under the temp folder, rebuilt when its
requirement list changes): the agent is ``pip install <repo>`` (runtime dependencies only,
no compiler extras); the peers get exactly the packages their service imports, at the
versions of this virtualenv. The figure is the size on disk of site-packages, less pip and
setuptools (every virtualenv has them), bytecode included as pip writes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "edge-agent-bench-venvs"
_TOOLING = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth")


def _pinned(*names: str) -> list[str]:
    return [f"{name}=={version(name)}" for name in names]


def contenders() -> dict[str, list[str]]:
    """Contender -> pip arguments."""
    web = ("starlette", "uvicorn", "fhir.resources", "numpy")
    return {
        "agent": [str(REPO)],
        "sklearn service": _pinned(*web, "scikit-learn", "scipy"),
        "onnxruntime service": _pinned(*web, "onnxruntime"),
    }


@dataclass(frozen=True)
class InstallSize:
    contender: str
    bytes: int
    packages: int


def _key(arguments: list[str]) -> str:
    text = json.dumps(arguments)
    if arguments == [str(REPO)]:  # the agent: rebuild when its dependencies change
        text += (REPO / "pyproject.toml").read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise RuntimeError(f"{venv} has no site-packages")
    return found[0]


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.stat(full).st_blocks * 512
    return total


def _venv(name: str, arguments: list[str]) -> Path:
    return CACHE / f"{name.replace(' ', '-')}-{_key(arguments)}"


def measure(name: str, arguments: list[str], build: bool) -> InstallSize | None:
    """The size of ``name``'s install; None when not cached and ``build`` is false."""
    venv = _venv(name, arguments)
    done = venv / ".installed"
    if not done.exists():
        if not build:
            return None
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *arguments,
            ],
            check=True,
        )
        done.touch()
    site = _site_packages(venv)
    entries = [p for p in site.iterdir() if not p.name.startswith(_TOOLING)]
    size = sum(_du(p) if p.is_dir() else p.stat().st_blocks * 512 for p in entries)
    packages = sum(1 for p in entries if p.name.endswith(".dist-info"))
    return InstallSize(name, size, packages)


def measure_all(build: bool) -> list[InstallSize]:
    """Every contender's size (those not cached are left out unless ``build``)."""
    sizes = [measure(name, arguments, build) for name, arguments in contenders().items()]
    return [s for s in sizes if s is not None]


def largest_packages(name: str, count: int) -> list[dict[str, int | str]]:
    """The ``count`` largest top-level entries of ``name``'s cached install (none if not
    built): where the bytes go."""
    venv = _venv(name, contenders()[name])
    if not (venv / ".installed").exists():
        return []
    site = _site_packages(venv)
    sizes = [
        (p.name, _du(p))
        for p in site.iterdir()
        if p.is_dir() and not p.name.startswith(_TOOLING) and not p.name.endswith("-info")
    ]
    sizes.sort(key=lambda item: -item[1])
    return [{"name": entry, "bytes": size} for entry, size in sizes[:count]]
