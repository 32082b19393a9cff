"""The one wasmtime engine configuration the agent compiles and runs model modules with.

Fuel metering is on (the per-call deadline), and linear memories never move (a 32-bit
memory fits wasmtime's default 4 GiB reservation), so the runtime can keep views of a
module's input and output regions for the life of an instance. Nothing else departs from
wasmtime's defaults. ``ENGINE_FINGERPRINT`` names the configuration and the wasmtime build:
it is part of the compiled-module cache key, because a serialized module is only valid for
the exact wasmtime version, target and engine settings that produced it.
"""

from __future__ import annotations

import functools
import platform
from importlib.metadata import version

import wasmtime

_SETTINGS = (("consume_fuel", "1"), ("cranelift_opt_level", "speed"), ("memory_may_move", "0"))

ENGINE_FINGERPRINT = ";".join(
    [f"wasmtime={version('wasmtime')}", f"machine={platform.machine()}"]
    + [f"{key}={value}" for key, value in _SETTINGS]
)


@functools.cache
def shared_engine() -> wasmtime.Engine:
    """The process-wide engine (engines are thread-safe and meant to be shared)."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.cranelift_opt_level = "speed"
    config.memory_may_move = False
    return wasmtime.Engine(config)
