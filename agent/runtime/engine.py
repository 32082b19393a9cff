"""The one wasmtime engine configuration the agent compiles and runs model modules with.

Fuel metering is on (the per-call deadline), and linear memories never move (a 32-bit
memory fits wasmtime's default 4 GiB reservation), so the runtime can keep views of a
module's input and output regions for the life of an instance. 128-bit SIMD and relaxed
SIMD are asked for by name: the compiler's dense and element-wise kernels are f32x4 code
and its dense layers use ``f32x4.relaxed_madd``, and wasmtime has both on by default
(verified on wasmtime 51), so naming them only keeps a changed default from failing every
dense model at load. Relaxed SIMD runs in its deterministic mode: ``relaxed_madd`` is then
always one fused multiply-add (one rounding), the same answer on every host, where the
default lets each host pick fused or not; on any x86-64 with FMA (2013 on) and on
aarch64 it is one instruction either way. Nothing else departs from wasmtime's defaults.

``ENGINE_FINGERPRINT`` names the configuration and the wasmtime build: it is part of the
compiled-module cache key, because a serialized module is only valid for the exact
wasmtime version, target and engine settings that produced it.

The build is identified by wasmtime's native library (path, size, modification time in
ns: any upgrade or reinstall changes it) rather than by ``importlib.metadata``, which
costs a serving process 4 MiB of resident memory for one version string; the package
version is used only if the bindings do not expose the library's path.
(``Module.deserialize`` checks compatibility again itself; the key keeps stale entries
from ever being tried.)
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from collections.abc import Callable
from typing import cast

import wasmtime

_SETTINGS = (
    ("consume_fuel", "1"),
    ("cranelift_opt_level", "speed"),
    ("memory_may_move", "0"),
    ("wasm_simd", "1"),
    ("wasm_relaxed_simd", "1"),
    ("wasm_relaxed_simd_deterministic", "1"),
)


def _wasmtime_build() -> str:
    try:
        from wasmtime import _ffi

        library = os.stat(_ffi.filename)
        return f"{_ffi.filename}:{library.st_size}:{library.st_mtime_ns}"
    except (ImportError, AttributeError, OSError):
        from importlib.metadata import version

        return version("wasmtime")


ENGINE_FINGERPRINT = ";".join(
    [f"wasmtime={_wasmtime_build()}", f"machine={platform.machine()}"]
    + [f"{key}={value}" for key, value in _SETTINGS]
)


@functools.cache
def shared_engine() -> wasmtime.Engine:
    """The process-wide engine (engines are thread-safe and meant to be shared)."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.cranelift_opt_level = "speed"
    config.memory_may_move = False
    config.wasm_simd = True
    config.wasm_relaxed_simd = True
    config.wasm_relaxed_simd_deterministic = True
    return wasmtime.Engine(config)


def compile_module(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    """Compile ``wasm``, then hand the compiler's freed scratch
    memory back to the OS (glibc keeps it otherwise: about 6 MiB of resident memory for
    the demo model). Elsewhere than glibc the trim is skipped."""
    module = wasmtime.Module(engine, wasm)
    with_trim = _malloc_trim()
    if with_trim is not None:
        with_trim(0)
    return module


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast(Callable[[int], int], trim)
