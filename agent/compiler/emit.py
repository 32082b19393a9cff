"""``Program`` -> the text of an ABI v1 module (see docs/abi.md).

Memory map, low to high: 16 unused bytes, the program's slots and tables (data segments
at their own addresses), the input region (``max_batch * n_features`` cells), the output
region (``max_batch * n_outputs`` cells). Memory is declared with min = max pages: a
compiled model never grows it.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.compiler.ir import CELL, Program, Value
from agent.compiler.mathlib import library_source
from agent.runtime import abi

PAGE = 65536
_MAX_PAGES = 65536


def _data_string(blob: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in blob)


def emit_module(
    program: Program, x: Value, outputs: Sequence[Value], max_batch: int
) -> str:
    """WAT text of the module: row loop, kernels, helpers, data and the ABI exports."""
    n_features = x.width
    n_outputs = sum(v.width for v in outputs)
    input_ptr = program.alloc(max_batch * n_features * CELL)
    output_ptr = program.alloc(max_batch * n_outputs * CELL)
    pages = max(1, -(-program.top // PAGE))
    if pages > _MAX_PAGES:
        raise ValueError("model does not fit a 32-bit memory")
    row_in = n_features * CELL
    row_out = n_outputs * CELL
    copies = []
    column = 0
    for value in outputs:
        copies.append(
            f"(memory.copy (i32.add (local.get $out) (i32.const {column * CELL})) "
            f"(i32.const {value.addr}) (i32.const {value.width * CELL}))"
        )
        column += value.width
    calls = "\n      ".join(f"(call {k.name})" for k in program.kernels)
    predict = f"""
  (func (export "{abi.PREDICT_EXPORT}") (param $n i32) (result i32) (local $r i32) (local $out i32)
    (if (i32.or (i32.lt_s (local.get $n) (i32.const 0))
                (i32.gt_s (local.get $n) (i32.const {max_batch})))
      (then (return (i32.const {abi.STATUS_BAD_BATCH}))))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_s (local.get $r) (local.get $n)))
        (memory.copy (i32.const {x.addr})
          (i32.add (i32.const {input_ptr}) (i32.mul (local.get $r) (i32.const {row_in})))
          (i32.const {row_in}))
        {calls}
        (local.set $out (i32.add (i32.const {output_ptr})
          (i32.mul (local.get $r) (i32.const {row_out}))))
        {" ".join(copies)}
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows)))
    (i32.const {abi.STATUS_OK}))
"""
    getters = "".join(
        f'  (func (export "{name}") (result i32) (i32.const {value}))\n'
        for name, value in (
            (abi.ABI_VERSION_EXPORT, abi.ABI_VERSION),
            (abi.N_FEATURES_EXPORT, n_features),
            (abi.N_OUTPUTS_EXPORT, n_outputs),
            (abi.MAX_BATCH_EXPORT, max_batch),
            (abi.INPUT_PTR_EXPORT, input_ptr),
            (abi.OUTPUT_PTR_EXPORT, output_ptr),
        )
    )
    data = "".join(
        f'  (data (i32.const {addr}) "{_data_string(blob)}")\n' for addr, blob in program.segments
    )
    kernels = "".join(k.source for k in program.kernels)
    return (
        f'(module\n  (memory (export "{abi.MEMORY_EXPORT}") {pages} {pages})\n'
        f"{getters}{predict}{kernels}{library_source(program.helpers)}{data})\n"
    )
