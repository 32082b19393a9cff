"""The compiler's intermediate form: per-row values in fixed memory slots, and kernels.

Every scikit-learn style graph is row-wise: row ``r`` of each output depends only on row
``r`` of the input. The compiler therefore lowers the graph once for a single row. Each
runtime tensor of shape ``[N, k]`` (or ``[N]``) becomes a ``Value``: a slot of ``k`` f32
cells at a fixed address; each ONNX node becomes a kernel, a WAT function without
parameters that reads its input slots and writes its output slots. ``edge_predict`` copies
row ``r`` into the input slot, calls the kernels in graph order and copies the output slots
out. Initializers and tables live in data segments at fixed addresses.

Integers and booleans are carried in f32 cells too (exact up to 2**24, far beyond class
indices and category codes); ``dtype`` records what a value means so casts and integer
division keep ONNX semantics.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from agent.errors import CompileError

CELL = 4  # bytes per f32 cell
_ALIGN = 16


class DType(StrEnum):
    float = "float"
    int = "int"
    bool = "bool"
    string = "string"  # only ever class labels, carried as the class index


@dataclass(frozen=True)
class Value:
    """A runtime tensor of one row: ``width`` f32 cells at ``addr``.

    ``rank`` is the ONNX rank including the batch axis (1 for ``[N]``, 2 for ``[N, k]``).
    ``classes`` is set when the cells hold class *indices* into that list (a classifier's
    label, a probability vector's columns): the ABI reports labels as indices. A value of
    rank 3 or more (a one-hot block ``[N, columns, categories]``) records its row shape in
    ``dims``, cells row-major, so a concatenation along its last axis can interleave.
    """

    name: str
    addr: int
    width: int
    rank: int = 2
    dtype: DType = DType.float
    classes: tuple[str, ...] | None = None
    dims: tuple[int, ...] | None = None  # axes after the batch axis, kept for rank > 2

    def cell(self, index: int) -> int:
        return self.addr + CELL * index

    def row_shape(self) -> tuple[int, ...] | None:
        """The shape of one row (the axes after the batch axis), None if not known."""
        if self.dims is not None:
            return self.dims
        return {1: (), 2: (self.width,)}.get(self.rank)


TILE_ROWS = 4  # rows a tile kernel scores at once


@dataclass(frozen=True)
class TileIO:
    """A tile kernel's interface: row value ``x`` is gathered from each row of a tile into
    a buffer, the kernel fills a buffer of ``out`` rows, which are scattered back into
    ``out``'s slot row by row. ``mark`` is the allocator's top when the kernel was added:
    every slot below it is written at or before this kernel, every slot above after it."""

    x: Value
    out: Value
    mark: int


@dataclass
class Kernel:
    """One WAT function. A row kernel (``tile`` None) has no parameters and is called once
    per row; it reads only ``reads`` (its node's row inputs) and slots its own node
    allocated. A tile kernel's source holds two functions with parameters
    ``(in, out)`` (byte addresses of row-major buffers with rows padded to whole
    vectors): ``name`` scores ``TILE_ROWS`` rows, ``name_row`` one row."""

    name: str
    source: str
    reads: tuple[Value, ...] = ()
    tile: TileIO | None = None


@dataclass
class Program:
    """Everything the module emitter needs: one bump allocator for both scratch slots and
    constant tables (a table is a data segment at its own address), kernels in call order
    and the names of the math helpers they call. Slots are never reused, so a slot's
    address tells when it was allocated (see ``TileIO.mark``)."""

    top: int = _ALIGN  # next free byte; address 0..15 stays unused
    segments: list[tuple[int, bytes]] = field(default_factory=list)
    kernels: list[Kernel] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    # slots holding raw decision scores (an SVM without probability estimates): aliases
    # share the address, so a graph output at one of them is not a probability
    decision_scores: set[int] = field(default_factory=set)

    def alloc(self, nbytes: int) -> int:
        addr = self.top
        self.top += ((max(nbytes, 1) + _ALIGN - 1) // _ALIGN) * _ALIGN
        return addr

    def slot(self, cells: int) -> int:
        """Scratch space for ``cells`` f32 cells (zeroed at instantiation)."""
        return self.alloc(cells * CELL)

    def add_data(self, blob: bytes) -> int:
        addr = self.alloc(len(blob))
        if blob:
            self.segments.append((addr, bytes(blob)))
        return addr

    def add_f32(self, values: np.ndarray | list[float]) -> int:
        return self.add_data(np.ascontiguousarray(values, dtype="<f4").tobytes())

    def add_i32(self, values: np.ndarray | list[int]) -> int:
        return self.add_data(np.ascontiguousarray(values, dtype="<i4").tobytes())

    def add_kernel(self, name: str, source: str, reads: tuple[Value, ...] = ()) -> None:
        self.kernels.append(Kernel(name, source, reads))

    def add_tile_kernel(self, name: str, source: str, x: Value, out: Value) -> None:
        self.kernels.append(Kernel(name, source, (x,), TileIO(x, out, self.top)))


def f32_literal(value: float) -> str:
    """A WAT f32 literal that round-trips exactly (hex float of the f32 value)."""
    as_f32 = struct.unpack("<f", struct.pack("<f", value))[0]
    if as_f32 != as_f32:
        return "nan"
    if as_f32 in (float("inf"), float("-inf")):
        return "inf" if as_f32 > 0 else "-inf"
    return float(as_f32).hex()


def f64_literal(value: float) -> str:
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return float(value).hex()


def fail(op: str, node: str, why: str) -> CompileError:
    """The one way kernels report what they cannot compile: op type and node name first."""
    return CompileError(f"{op} node {node!r}: {why}")
