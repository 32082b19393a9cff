"""Small WAT building blocks the kernels share: operands and a loop over a row's cells."""

from __future__ import annotations

from dataclasses import dataclass

from agent.compiler.ir import CELL, f32_literal


@dataclass(frozen=True)
class Operand:
    """Where an f32 comes from inside a cell loop: a slot walked cell by cell
    (``stride`` 4), one cell repeated (``stride`` 0) or an immediate constant."""

    addr: int = 0
    stride: int = 0
    immediate: float | None = None

    def load(self) -> str:
        """WAT for the operand at the loop's current byte offset ``$o``."""
        if self.immediate is not None:
            return f"(f32.const {f32_literal(self.immediate)})"
        if self.stride == 0:
            return f"(f32.load (i32.const {self.addr}))"
        return f"(f32.load offset={self.addr} (local.get $o))"


def cell_loop(width: int, body: str) -> str:
    """Run ``body`` once per cell with ``$o`` = byte offset of the cell (0, 4, ...).
    Needs ``(local $o i32)`` in the enclosing kernel."""
    if width == 1:
        return f"(local.set $o (i32.const 0))\n{body}\n"
    return (
        "(local.set $o (i32.const 0))\n"
        "(loop $cells\n"
        f"{body}\n"
        f"(local.set $o (i32.add (local.get $o) (i32.const {CELL})))\n"
        f"(br_if $cells (i32.lt_u (local.get $o) (i32.const {width * CELL}))))\n"
    )


def store_cell(out_addr: int, expr: str) -> str:
    return f"(f32.store offset={out_addr} (local.get $o) {expr})"


def via_f64(helper: str, expr: str) -> str:
    """Apply an f64 math helper to an f32 expression, rounding back to f32."""
    return f"(f32.demote_f64 (call ${helper} (f64.promote_f32 {expr})))"


def bool_to_f32(condition: str) -> str:
    return f"(f32.convert_i32_u {condition})"
