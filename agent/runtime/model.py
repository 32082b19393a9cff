"""A model module loaded into the wasmtime sandbox: ABI checks, deadlines, memory cap.

Threats each check stops:

* a module that imports anything (WASI, host functions) could reach files, the network or
  the agent's memory through the host: refused at load (``AbiViolation``), so a module can
  only compute on the bytes the agent writes into its memory;
* a module that loops forever: every call runs under a fuel budget of
  ``limits.model_fuel_per_row`` per row and fails with ``ModelDeadline``;
* a module that grows memory without end: ``Store.set_limits`` caps linear memory at
  ``limits.model_memory_max`` (``memory.grow`` fails past it);
* a module that traps, or whose state a trap may have left half-written: ``ModelTrap``,
  and the instance is thrown away and re-instantiated before the next call;
* a module that lies about its shape (pointers outside its memory, absurd counts): refused
  at load; both regions must lie inside the initial memory, which never shrinks and, with
  this engine, never moves, so the runtime's views of them stay in bounds.

Thread safety: one instance behind a lock. A call into a compiled tree ensemble takes
microseconds, so a lock costs less than a pool's extra memory and instantiation.
"""

from __future__ import annotations

import array
import ctypes
import itertools
import math
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import wasmtime

from agent.errors import (
    AbiViolation,
    ModelDeadline,
    ModelTrap,
    ModuleMismatch,
    RecordError,
    RuntimeFault,
)
from agent.limits import Limits
from agent.runtime import abi
from agent.runtime.cache import ModuleCache, load_or_compile
from agent.runtime.calls import FuelSetter, PredictCall, fast_calls, public_calls
from agent.runtime.engine import shared_engine

# Fuel for instantiation and the shape getters: enough for any honest data-segment setup.
_SETUP_FUEL = 10_000_000
_MAX_TABLE_ELEMENTS = 10_000
# Fuel units: a call budgeted at most this keeps the GIL (``agent.runtime.calls``). One row
# at the default ``limits.model_fuel_per_row``: a module that burns all of it holds the GIL
# about 2 ms, less than CPython's 5 ms switch interval lets any thread hold it.
_GIL_HELD_FUEL_MAX = 5_000_000


@dataclass(frozen=True)
class ModuleShape:
    """What a module said about itself at load, after validation."""

    n_features: int
    n_outputs: int
    max_batch: int
    input_ptr: int
    output_ptr: int


@dataclass
class _Instance:
    """One instantiation, with views of its input and output regions. The views stay valid
    because the engine never moves linear memory (``memory_may_move = False``) and memory
    never shrinks; both regions were checked to lie inside the initial memory."""

    store: wasmtime.Store
    memory: wasmtime.Memory
    predict: PredictCall
    set_fuel: FuelSetter
    inputs: ctypes.Array[ctypes.c_float]
    outputs: memoryview[float]


class WasmModel:
    """A validated model module, ready to score rows. Build with :meth:`load`."""

    def __init__(
        self,
        module: wasmtime.Module,
        instance: _Instance,
        shape: ModuleShape,
        limits: Limits,
        fast_path: bool,
    ) -> None:
        self._module = module
        self._shape = shape
        self._limits = limits
        self._fast_path = fast_path
        self._lock = threading.Lock()
        self._instance = instance
        self._rows_per_call = min(shape.max_batch, limits.batch_rows_max)

    @classmethod
    def load(
        cls,
        wasm: bytes,
        *,
        limits: Limits,
        cache: ModuleCache | None = None,
        fast_path: bool = True,
    ) -> WasmModel:
        """Compile (or fetch from ``cache``) and validate a module against ABI v1.

        Raises ``AbiViolation`` naming the broken rule: the module is not valid wasm, is
        larger than ``limits.wasm_module_max``, imports anything, lacks or mistypes an
        export, or describes a shape its memory cannot hold. ``fast_path=False`` forces the
        public wasmtime-py call path (the fast path is used only when available anyway).
        """
        if len(wasm) > limits.wasm_module_max:
            raise AbiViolation("module is larger than limits.wasm_module_max")
        try:
            module = load_or_compile(shared_engine(), wasm, cache)
        except wasmtime.WasmtimeError as exc:
            raise AbiViolation("module is not valid WebAssembly") from exc
        check_module(module)
        instance, shape = _instantiate(module, limits, fast_path)
        return cls(module, instance, shape, limits, fast_path)

    @property
    def n_features(self) -> int:
        return self._shape.n_features

    @property
    def n_outputs(self) -> int:
        return self._shape.n_outputs

    @property
    def max_batch(self) -> int:
        return self._shape.max_batch

    def self_test(self, n_features: int, n_outputs: int, row: Sequence[float]) -> None:
        """Refuse a module that does not do what its bundle declares, before it serves.

        Stops: a validly signed bundle whose module reads another number of features or
        writes another number of outputs than its manifest lists (every request would
        fail while readiness said ready), and one that traps, runs out of fuel or answers
        with a non-finite value on ``row``, a typical input (the manifest's reference
        medians). Raises ``ModuleMismatch``."""
        if (self.n_features, self.n_outputs) != (n_features, n_outputs):
            raise ModuleMismatch(
                f"module has {self.n_features} inputs and {self.n_outputs} outputs, "
                f"its manifest declares {n_features} and {n_outputs}"
            )
        try:
            answers = self.predict([row])
        except (RuntimeFault, RecordError) as exc:
            raise ModuleMismatch(f"module fails on its reference row ({exc.reason})") from exc
        if len(answers) != 1 or not all(math.isfinite(v) for v in answers[0]):
            raise ModuleMismatch("module gives no finite answer for its reference row")

    def predict(self, rows: Sequence[Sequence[float]]) -> list[list[float]]:
        """Score rows (each ``n_features`` long, in manifest input order); returns one list
        of ``n_outputs`` values per row, in manifest output order. A C-contiguous float32
        matrix (e.g. a numpy array) is copied in as bytes; other rows are converted.

        Raises ``RecordError`` for a row of the wrong width or a non-number,
        ``ModelDeadline`` when a call runs out of fuel and ``ModelTrap`` when the module
        traps or returns a non-zero status. The model keeps serving after either.
        """
        width = self._shape.n_features
        matrix = _f32_matrix(rows)
        for length in map(len, rows) if matrix is None else (matrix.shape or (0, 0))[1:]:
            if length != width:
                raise RecordError(
                    f"a feature vector has {length} values, the model expects {width}"
                )
        step = self._rows_per_call
        if len(rows) <= step:
            return self._call(rows, matrix)
        results: list[list[float]] = []
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            results.extend(self._call(part, _f32_matrix(part)))
        return results

    def predict_matrix(self, matrix: object) -> array.array[float]:
        """Score a C-contiguous 2-D little-endian float32 buffer (a numpy array, or an
        ``array.array("f")`` viewed through ``memoryview(...).cast("B").cast("f", shape)``)
        and return the outputs as one flat float32 array, row-major (``n_outputs`` per
        row; numpy: ``np.frombuffer(result, np.float32).reshape(-1, n_outputs)``).

        The whole batch path runs without a Python step per row: each call's rows are
        copied into linear memory as bytes and its outputs copied out as bytes, so a batch
        costs what the module's kernels cost. Raises as ``predict``, and ``RecordError``
        for a buffer of another layout."""
        view = _f32_matrix(matrix)
        if view is None:
            raise RecordError("a feature matrix must be a C-contiguous 2-D float32 buffer")
        n_rows, width = view.shape or (0, 0)
        if width != self._shape.n_features:
            raise RecordError(
                f"a feature vector has {width} values, the model expects {self._shape.n_features}"
            )
        result = array.array("f")
        if n_rows == 0:
            return result
        cells = view.cast("B")
        in_bytes = width * abi.CELL_BYTES
        out_bytes = self._shape.n_outputs * abi.CELL_BYTES
        for start in range(0, n_rows, self._rows_per_call):
            count = min(self._rows_per_call, n_rows - start)
            with self._lock:
                inst = self._instance
                memoryview(inst.inputs).cast("B")[: count * in_bytes] = cells[
                    start * in_bytes : (start + count) * in_bytes
                ]
                self._run(count)
                result.frombytes(inst.outputs.cast("B")[: count * out_bytes])
        return result

    def _call(
        self, rows: Sequence[Sequence[float]], matrix: memoryview | None
    ) -> list[list[float]]:
        """One call on at most ``_rows_per_call`` rows (``matrix``: their float32 view, if
        they have one)."""
        n_rows = len(rows)
        n_out = self._shape.n_outputs
        with self._lock:
            inst = self._instance
            _write_rows(inst.inputs, rows, self._shape.n_features, matrix)
            self._run(n_rows)
            values = cast(list[float], inst.outputs[: n_rows * n_out].tolist())
        if n_out == 1:
            return [[v] for v in values]
        return [values[i : i + n_out] for i in range(0, len(values), n_out)]

    def _run(self, n_rows: int) -> None:
        """Call ``edge_predict`` on the ``n_rows`` rows already in the input region, under
        their fuel budget (the caller holds the lock). A trap or wasmtime error replaces
        the instance before it is raised as ``ModelDeadline`` or ``ModelTrap``."""
        inst = self._instance
        try:
            inst.set_fuel(self._limits.model_fuel_per_row * max(n_rows, 1))
            status = inst.predict(n_rows)
        except wasmtime.Trap as exc:
            self._instance = _instantiate(self._module, self._limits, self._fast_path)[0]
            if exc.trap_code is wasmtime.TrapCode.OUT_OF_FUEL:
                raise ModelDeadline(
                    f"model call exceeded its fuel budget ({n_rows} rows)"
                ) from None
            code = exc.trap_code.name.lower() if exc.trap_code is not None else "unknown"
            raise ModelTrap(f"model trapped: {code}") from None
        except wasmtime.WasmtimeError as exc:
            self._instance = _instantiate(self._module, self._limits, self._fast_path)[0]
            raise ModelTrap("model call failed inside wasmtime") from exc
        if status != abi.STATUS_OK:
            name = abi.STATUS_NAMES.get(status, "unknown")
            raise ModelTrap(f"edge_predict returned status {status} ({name})")


def _write_rows(
    inputs: ctypes.Array[ctypes.c_float],
    rows: Sequence[Sequence[float]],
    width: int,
    matrix: memoryview | None,
) -> None:
    """Copy ``rows`` into the input region as f32. A C-contiguous float32 matrix (a numpy
    array, any buffer of format ``f``; ``matrix`` is its view, taken by the caller) is
    copied as bytes. Otherwise ``struct.pack_into`` converts a batch, about twice as fast
    as assigning a list to the ctypes array (one row is faster the ctypes way); it refuses
    finite values beyond the f32 range, which the ctypes path rounds to infinity like any
    C cast, so those batches (and non-numbers, for the error) take the ctypes path."""
    count = len(rows) * width
    if matrix is not None:
        memoryview(inputs).cast("B")[: 4 * count] = matrix.cast("B")
        return
    if len(rows) > 1:
        try:
            struct.pack_into(f"{count}f", inputs, 0, *itertools.chain.from_iterable(rows))
            return
        except (struct.error, OverflowError):
            pass
    flat: list[Any] = list(rows[0]) if len(rows) == 1 else [v for row in rows for v in row]
    try:
        inputs[:count] = flat
    except TypeError as exc:
        raise RecordError("a feature vector holds a non-number") from exc


_F32_FORMATS = ("<f", "f", "=f") if sys.byteorder == "little" else ("<f",)


def _f32_matrix(rows: object) -> memoryview | None:
    """A view of ``rows`` if it is a C-contiguous 2-D little-endian float32 buffer (the
    ABI's cell layout), else None."""
    if isinstance(rows, list | tuple):  # the common case: no exception to pay for
        return None
    try:
        view = memoryview(rows)  # type: ignore[arg-type]
    except TypeError:
        return None
    if view.format not in _F32_FORMATS or view.ndim != 2 or not view.c_contiguous:
        return None
    return view


def check_module(module: wasmtime.Module) -> None:
    """Refuse a module that imports anything or lacks/mistypes an ABI v1 export."""
    imports = module.imports
    if imports:
        first = imports[0]
        raise AbiViolation(
            f"ABI rule 'imports nothing': module imports {first.module}.{first.name}"
        )
    exports = {export.name: export.type for export in module.exports}
    memory = exports.get(abi.MEMORY_EXPORT)
    if not isinstance(memory, wasmtime.MemoryType):
        raise AbiViolation(f"ABI rule 'exports memory': no memory named {abi.MEMORY_EXPORT!r}")
    if memory.is_64:
        raise AbiViolation("ABI rule 'exports memory': memory must be 32-bit")
    for name, (params, results) in abi.FUNCTION_EXPORTS.items():
        func = exports.get(name)
        if not isinstance(func, wasmtime.FuncType):
            raise AbiViolation(f"ABI rule 'exports {name}': missing function export")
        got = (tuple(str(p) for p in func.params), tuple(str(r) for r in func.results))
        if got != (params, results):
            raise AbiViolation(
                f"ABI rule 'exports {name}': type must be {params} -> {results}, found {got}"
            )


def _instantiate(
    module: wasmtime.Module, limits: Limits, fast_path: bool
) -> tuple[_Instance, ModuleShape]:
    store = wasmtime.Store(shared_engine())
    store.set_limits(
        memory_size=limits.model_memory_max,
        table_elements=_MAX_TABLE_ELEMENTS,
        instances=1,
        tables=1,
        memories=1,
    )
    store.set_fuel(_SETUP_FUEL)
    try:
        instance = wasmtime.Instance(store, module, [])
        exports = instance.exports(store)
        memory = exports[abi.MEMORY_EXPORT]
        getters = {name: exports[name] for name in abi.FUNCTION_EXPORTS}
        values = {
            name: func(store)
            for name, func in getters.items()
            if name != abi.PREDICT_EXPORT and isinstance(func, wasmtime.Func)
        }
    except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
        raise AbiViolation("module failed to instantiate or describe itself") from exc
    predict = getters[abi.PREDICT_EXPORT]
    if not isinstance(memory, wasmtime.Memory) or not isinstance(predict, wasmtime.Func):
        raise AbiViolation("ABI rule 'exports memory and edge_predict': wrong export kinds")
    shape = _shape(values, memory.data_len(store))
    held_rows = _GIL_HELD_FUEL_MAX // limits.model_fuel_per_row
    calls = fast_calls(store, predict, held_rows) if fast_path else None
    predict_call, set_fuel = calls if calls is not None else public_calls(store, predict)
    base = _addressof(memory.data_ptr(store))
    in_cells = shape.max_batch * shape.n_features
    out_cells = shape.max_batch * shape.n_outputs
    inputs = (ctypes.c_float * in_cells).from_address(base + shape.input_ptr)
    out_array = (ctypes.c_float * out_cells).from_address(base + shape.output_ptr)
    outputs = memoryview(out_array).cast("B").cast("f")
    return _Instance(store, memory, predict_call, set_fuel, inputs, outputs), shape


def _shape(values: dict[str, object], memory_bytes: int) -> ModuleShape:
    def get(name: str) -> int:
        value = values[name]
        if not isinstance(value, int):
            raise AbiViolation(f"ABI rule 'exports {name}': must return an i32")
        return value

    version = get(abi.ABI_VERSION_EXPORT)
    if version != abi.ABI_VERSION:
        raise AbiViolation(f"ABI rule 'edge_abi_version() == {abi.ABI_VERSION}': got {version}")
    shape = ModuleShape(
        n_features=get(abi.N_FEATURES_EXPORT),
        n_outputs=get(abi.N_OUTPUTS_EXPORT),
        max_batch=get(abi.MAX_BATCH_EXPORT),
        input_ptr=get(abi.INPUT_PTR_EXPORT),
        output_ptr=get(abi.OUTPUT_PTR_EXPORT),
    )
    if not 1 <= shape.n_features <= abi.MAX_FEATURES:
        raise AbiViolation("ABI rule 'n_features in 1..65536'")
    if not 1 <= shape.n_outputs <= abi.MAX_OUTPUTS:
        raise AbiViolation("ABI rule 'n_outputs in 1..65536'")
    if shape.max_batch < 1:
        raise AbiViolation("ABI rule 'max_batch >= 1'")
    for name, ptr, width in (
        ("input", shape.input_ptr, shape.n_features),
        ("output", shape.output_ptr, shape.n_outputs),
    ):
        end = ptr + shape.max_batch * width * abi.CELL_BYTES
        if ptr < 0 or ptr % abi.CELL_BYTES or end > memory_bytes:
            raise AbiViolation(
                f"ABI rule '{name} region aligned and inside memory': "
                f"[{ptr}, {end}) does not fit {memory_bytes} bytes"
            )
    return shape


def _addressof(pointer: Any) -> int:
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0
