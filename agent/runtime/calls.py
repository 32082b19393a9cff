"""How the runtime calls ``edge_predict`` and sets fuel: a fast path and the public one.

The public ``wasmtime.Func.__call__`` re-reads the function type, converts every value
through ``Val`` and costs about 17 us per call, more than a whole depth-3 forest. The fast
path calls the same C functions (``wasmtime_func_call``, ``wasmtime_context_set_fuel``)
through wasmtime-py's own ctypes bindings with argument buffers allocated once, and turns
a trap or error into the very exception types the public path raises. It depends on
wasmtime-py internals (``wasmtime._ffi``), so it is built only when they look as expected
and otherwise the public path is used; both are tested.
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


def fast_calls(store: wasmtime.Store, func: wasmtime.Func) -> tuple[PredictCall, FuelSetter] | None:
    """Direct C calls with preallocated buffers, or None if the bindings differ."""
    try:
        from wasmtime import _ffi as ffi

        call_c: Any = ffi.dll.wasmtime_func_call
        set_fuel_c: Any = ffi.dll.wasmtime_context_set_fuel
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
