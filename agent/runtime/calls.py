"""How the runtime calls ``edge_predict`` and sets fuel: a fast path and the public one.

The public ``wasmtime.Func.__call__`` re-reads the function type, converts every value
through ``Val`` and costs about 17 us per call, more than a whole depth-3 forest. The fast
path calls the same C functions (``wasmtime_func_call``, ``wasmtime_context_set_fuel``)
through wasmtime-py's own ctypes bindings with argument buffers allocated once, and turns
a trap or error into the very exception types the public path raises. It depends on
wasmtime-py internals (``wasmtime._ffi``), so it is built only when they look as expected
and otherwise the public path is used; both are tested.

The fast path also keeps the GIL through a short call. A ctypes ``CDLL`` function releases
the GIL on every call; a microsecond call gains nothing from that, and in a serving process
a writer thread (audit log, prediction store) woken by the request takes the GIL there, so
the request waits for the writer's Python work and pays the hand-over back: measured on the
demo pipeline, 20-30 us of the request thread's CPU per request and more in wall time. So
``set_fuel`` (which never runs wasm) always keeps the GIL, and ``edge_predict`` keeps it for
calls of at most ``held_rows`` rows, whose fuel budget bounds how long the GIL is held; a
larger batch releases it, so other threads run while the module works.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import wasmtime

PredictCall = Callable[[int], int]
FuelSetter = Callable[[int], None]


def public_calls(store: wasmtime.Store, func: wasmtime.Func) -> tuple[PredictCall, FuelSetter]:
    """The documented wasmtime-py API: always available."""

    def call(n_rows: int) -> int:
        result = func(store, n_rows)
        if not isinstance(result, int):
            raise wasmtime.WasmtimeError("edge_predict returned a non-integer")
        return result

    return call, store.set_fuel


def fast_calls(
    store: wasmtime.Store, func: wasmtime.Func, held_rows: int
) -> tuple[PredictCall, FuelSetter] | None:
    """Direct C calls with preallocated buffers, or None if the bindings differ; calls of
    at most ``held_rows`` rows keep the GIL (see the module)."""
    try:
        from wasmtime import _ffi as ffi

        call_released: Any = ffi.dll.wasmtime_func_call
        call_held = _holding_gil(call_released)
        set_fuel_c = _holding_gil(ffi.dll.wasmtime_context_set_fuel)
        args = (ffi.wasmtime_val_t * 1)()
        results = (ffi.wasmtime_val_t * 1)()
        args[0].kind = ffi.WASMTIME_I32
        context = store._context()
        func_ref = ctypes.byref(func._func)
        # One trap slot per instance: a trap or error discards the instance (and these
        # closures) before the next call, so the slot is never seen non-null twice.
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        trap_ref = ctypes.byref(trap)
        error_from = wasmtime.WasmtimeError._from_ptr
        trap_from = wasmtime.Trap._from_ptr
        arg_union = args[0].of
        result_union = results[0].of
    except (ImportError, AttributeError, TypeError):
        return None

    def call(n_rows: int) -> int:
        arg_union.i32 = n_rows
        call_c = call_held if n_rows <= held_rows else call_released
        error = call_c(context, func_ref, args, 1, results, 1, trap_ref)
        if error:
            raise error_from(error)
        if trap:
            raise trap_from(trap)
        value: int = result_union.i32
        return value

    def set_fuel(fuel: int) -> None:
        error = set_fuel_c(context, fuel)
        if error:
            raise error_from(error)

    return call, set_fuel


def _holding_gil(function: Any) -> Any:
    """The same C function, called without releasing the GIL (what ``ctypes.PyDLL`` does):
    a prototype with the same argument and result types, bound to the same address."""
    address = ctypes.cast(function, ctypes.c_void_p).value
    if address is None:
        raise TypeError("a C function without an address")
    return ctypes.PYFUNCTYPE(function.restype, *function.argtypes)(address)
