"""Edge inference agent: signed WebAssembly model bundles scored next to the hospital's data.

The public surface is deliberately small: the version, and ``build`` for a data scientist
who turns a fitted model into a bundle from Python (it imports the compiler lazily, so a
hospital server without the ``[build]`` extra never loads onnx or scikit-learn).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "build"]


def build(*args: Any, **kwargs: Any) -> Any:
    """Compile a model into a bundle directory; see :func:`agent.compiler.build.build`."""
    from agent.compiler.build import build as _build

    return _build(*args, **kwargs)
