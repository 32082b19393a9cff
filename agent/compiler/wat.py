"""Small WAT building blocks the kernels share: operands, scalar/SIMD lanes, cell loops."""

from __future__ import annotations

from dataclasses import dataclass

from agent.compiler.ir import CELL, f32_literal

VECTOR_LANES = 4
_VECTOR_BYTES = VECTOR_LANES * CELL


@dataclass(frozen=True)
class Operand:
    """Where an f32 comes from inside a cell loop: a slot walked cell by cell
    (``stride`` 4), one cell repeated (``stride`` 0) or an immediate constant."""

    addr: int = 0
    stride: int = 0
    immediate: float | None = None

    def load(self) -> str:
        """WAT for the operand at the loop's current byte offset ``$o``."""
        return SCALAR.load(self)


@dataclass(frozen=True)
class Lanes:
    """The same cell expression as scalar f32 or as f32x4 SIMD (four cells at once).

    In a vector loop every slot is read and written in 16-byte steps; slots and constant
    tables are 16-byte aligned and sized (``Program.alloc``), so the extra lanes stay inside
    the value's own padding and are never read as results."""

    vector: bool

    @property
    def kind(self) -> str:
        return "f32x4" if self.vector else "f32"

    def op(self, name: str, *args: str) -> str:
        return f"({self.kind}.{name} {' '.join(args)})"

    def const(self, value: float) -> str:
        scalar = f"(f32.const {f32_literal(value)})"
        return f"(f32x4.splat {scalar})" if self.vector else scalar

    def load(self, operand: Operand) -> str:
        if operand.immediate is not None:
            return self.const(operand.immediate)
        if operand.stride == 0:
            scalar = f"(f32.load (i32.const {operand.addr}))"
            return f"(f32x4.splat {scalar})" if self.vector else scalar
        return f"({'v128' if self.vector else 'f32'}.load offset={operand.addr} (local.get $o))"

    def flag(self, mask: str) -> str:
        """A comparison result (i32 or lane mask) as 1.0 / 0.0."""
        if self.vector:
            return f"(v128.and {mask} {self.const(1.0)})"
        return f"(f32.convert_i32_u {mask})"

    def logic(self, name: str, a: str, b: str) -> str:
        """and / or / xor of two comparison results."""
        return f"({'v128' if self.vector else 'i32'}.{name} {a} {b})"

    def select(self, if_true: str, if_false: str, mask: str) -> str:
        if self.vector:
            return f"(v128.bitselect {if_true} {if_false} {mask})"
        return f"(select {if_true} {if_false} {mask})"

    def loop(self, width: int, out_addr: int, expr: str) -> str:
        """Store ``expr`` for every cell (or group of four cells) of an output slot.
        Needs ``(local $o i32)`` in the enclosing kernel."""
        if not self.vector:
            return cell_loop(width, store_cell(out_addr, expr))
        end = -(-width // VECTOR_LANES) * _VECTOR_BYTES
        store = f"(v128.store offset={out_addr} (local.get $o) {expr})"
        if end == _VECTOR_BYTES:
            return f"(local.set $o (i32.const 0))\n{store}\n"
        return (
            "(local.set $o (i32.const 0))\n"
            f"(loop $cells\n{store}\n"
            f"(local.set $o (i32.add (local.get $o) (i32.const {_VECTOR_BYTES})))\n"
            f"(br_if $cells (i32.lt_u (local.get $o) (i32.const {end}))))\n"
        )


SCALAR = Lanes(vector=False)
VECTOR = Lanes(vector=True)


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
