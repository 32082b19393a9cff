"""Edge inference agent: signed WebAssembly model bundles scored next to the hospital's data.

The public surface is deliberately small: the version, ``build`` for a data scientist
who turns a fitted model into a bundle from Python (it imports the compiler lazily, so a
hospital server without the ``[build]`` extra never loads onnx or scikit-learn), and
``load`` to score a bundle in process (``agent.load("build/sepsis").predict(frame)``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "build", "load"]


def build(*args: Any, **kwargs: Any) -> Any:
    """Compile a model into a bundle directory; see :func:`agent.compiler.build.build`."""
    from agent.compiler.build import build as _build

    return _build(*args, **kwargs)


def load(*args: Any, **kwargs: Any) -> Any:
    """Load a bundle directory for scoring in process; see :func:`agent.local.load`."""
    from agent.local import load as _load

    return _load(*args, **kwargs)
