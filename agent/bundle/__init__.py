"""Bundles: the manifest contract, verification and signing. ``build`` is the compiler's
entry point, imported lazily so that loading this package never imports onnx."""

from __future__ import annotations

from typing import Any


def build(*args: Any, **kwargs: Any) -> Any:
    """Compile a model into a bundle directory; see :func:`agent.compiler.build.build`."""
    from agent.compiler.build import build as _build

    return _build(*args, **kwargs)
