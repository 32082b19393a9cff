"""``Program`` -> the text of an ABI v1 module (see docs/abi.md).

Rows are scored in tiles of ``TILE_ROWS``. Without tile kernels each row runs every
kernel in turn; a tile kernel (a batched dense layer) cuts the kernels into phases: phase
``q`` runs for each row of the tile, gathering the tile kernel's input row into a buffer,
then the tile kernel scores all rows at once, and phase ``q+1`` starts each row by
scattering its output row back (see ``_Schedule``). Between two tile kernels with
nothing in between (an MLP's hidden layers) there is no phase: the second reads the
first's output buffer.

Memory map, low to high: 16 unused bytes, the program's slots and tables (data segments
at their own addresses), tile buffers and save areas, the input region
(``max_batch * n_features`` cells), the output region (``max_batch * n_outputs`` cells).
Memory is declared with min = max pages: a compiled model never grows it.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.compiler.ir import CELL, TILE_ROWS, Kernel, Program, TileIO, Value
from agent.compiler.mathlib import library_source
from agent.runtime import abi

PAGE = 65536
_LANES = 4
_UNROLL_COPY_VECTORS = 16  # wider values are copied with memory.copy
_MAX_PAGES = 65536


def _data_string(blob: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in blob)


def emit_module(program: Program, x: Value, outputs: Sequence[Value], max_batch: int) -> str:
    """WAT text of the module: tile loop, kernels, helpers, data and the ABI exports."""
    n_features = x.width
    n_outputs = sum(v.width for v in outputs)
    schedule = _Schedule(program, outputs)
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
    read_row = (
        f"(memory.copy (i32.const {x.addr}) (i32.add (i32.const {input_ptr}) "
        f"(i32.mul (local.get $r) (i32.const {row_in}))) (i32.const {row_in}))"
    )
    write_row = (
        f"(local.set $out (i32.add (i32.const {output_ptr}) "
        f"(i32.mul (local.get $r) (i32.const {row_out}))))\n" + " ".join(copies)
    )
    steps = []
    for q, phase in enumerate(schedule.phases):
        if not schedule.chained[q]:
            body = [read_row if q == 0 else schedule.scatter(q - 1)]
            body += [schedule.restore(value) for value in schedule.restores[q]]
            body += [f"(call {k.name})" for k in phase]
            body += [schedule.save(value) for value in schedule.saves[q]]
            body.append(write_row if q == len(schedule.tiles) else schedule.gather(q))
            steps.append(_each_row("\n        ".join(body)))
        if q < len(schedule.tiles):
            steps.append(schedule.call_tile(q))
    predict = f"""
  (func (export "{abi.PREDICT_EXPORT}") (param $n i32) (result i32)
    (local $s i32) (local $r i32) (local $t i32) (local $count i32) (local $out i32)
    (if (i32.or (i32.lt_s (local.get $n) (i32.const 0))
                (i32.gt_s (local.get $n) (i32.const {max_batch})))
      (then (return (i32.const {abi.STATUS_BAD_BATCH}))))
    (block $done
      (loop $tiles
        (br_if $done (i32.ge_s (local.get $s) (local.get $n)))
        (local.set $count (select (i32.const {TILE_ROWS}) (i32.sub (local.get $n) (local.get $s))
          (i32.ge_s (i32.sub (local.get $n) (local.get $s)) (i32.const {TILE_ROWS}))))
        {"".join(steps)}
        (local.set $s (i32.add (local.get $s) (i32.const {TILE_ROWS})))
        (br $tiles)))
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


def _each_row(body: str) -> str:
    """Run ``body`` for rows ``t = 0..count-1`` of the tile (``r`` = batch row)."""
    return f"""
      (local.set $t (i32.const 0))
      (loop $row
        (local.set $r (i32.add (local.get $s) (local.get $t)))
        {body}
        (local.set $t (i32.add (local.get $t) (i32.const 1)))
        (br_if $row (i32.lt_s (local.get $t) (local.get $count))))"""


def _vectors(value: Value) -> int:
    return -(-value.width // _LANES)


def _copy(dst: str, src: str, value: Value) -> str:
    """Copy ``value``'s cells, rounded up to whole vectors (slots and buffer rows are
    16-byte aligned and padded), between two i32 address expressions."""
    n = _vectors(value)
    if n > _UNROLL_COPY_VECTORS:
        return f"(memory.copy {dst} {src} (i32.const {16 * n}))"
    return " ".join(
        f"(v128.store offset={16 * k} {dst} (v128.load offset={16 * k} {src}))" for k in range(n)
    )


class _Schedule:
    """The kernels cut into phases at tile kernels, with the buffers that carry rows
    across a cut. Phase ``q`` runs row by row over a tile; tile kernel ``q`` then scores the
    whole tile. A slot written in an earlier phase and read in phase ``q`` is saved per row
    (``saves``) after the phase that wrote it and restored before phase ``q``
    (``restores``): the phases in between overwrote it with the tile's other rows."""

    def __init__(self, program: Program, outputs: Sequence[Value]) -> None:
        self.phases: list[list[Kernel]] = [[]]
        self.tiles: list[TileIO] = []
        self._tile_names: list[str] = []
        reads: list[list[Value]] = [[]]
        for kernel in program.kernels:
            if kernel.tile is None:
                self.phases[-1].append(kernel)
                reads[-1].extend(kernel.reads)
            else:
                reads[-1].append(kernel.tile.x)
                self.tiles.append(kernel.tile)
                self._tile_names.append(kernel.name)
                self.phases.append([])
                reads.append([])
        reads[-1].extend(outputs)
        self.restores: list[list[Value]] = [[] for _ in self.phases]
        self.saves: list[list[Value]] = [[] for _ in self.phases]
        saved: dict[tuple[int, int], Value] = {}
        for q, phase_reads in enumerate(reads):
            for value in phase_reads:
                key = (value.addr, value.width)
                written = self._written_in(value)
                if written < q and key not in {(v.addr, v.width) for v in self.restores[q]}:
                    self.restores[q].append(value)
                    if key not in saved:
                        saved[key] = value
                        self.saves[written].append(value)
        self._areas = {
            key: program.alloc(TILE_ROWS * 16 * _vectors(value)) for key, value in saved.items()
        }
        # Phase q between two tile kernels is skipped when it would only scatter tile
        # q-1's output and gather it back as tile q's input (two dense layers in a row):
        # tile q then reads tile q-1's output buffer, whose rows have the same layout.
        self.chained = [
            0 < q < len(self.tiles)
            and not self.phases[q]
            and not self.restores[q]
            and not self.saves[q]
            and (self.tiles[q].x.addr, self.tiles[q].x.width)
            == (self.tiles[q - 1].out.addr, self.tiles[q - 1].out.width)
            for q in range(len(self.phases))
        ]
        self._buffers: list[tuple[int, int]] = []
        for q, tile in enumerate(self.tiles):
            x_buf = (
                self._buffers[q - 1][1]
                if self.chained[q]
                else program.alloc(TILE_ROWS * 16 * _vectors(tile.x))
            )
            self._buffers.append((x_buf, program.alloc(TILE_ROWS * 16 * _vectors(tile.out))))

    def _written_in(self, value: Value) -> int:
        """The phase whose rows write ``value``'s cells (a tile's output: the next one)."""
        for b, tile in enumerate(self.tiles):
            if value.addr == tile.out.addr:
                return b + 1
        return sum(1 for tile in self.tiles if tile.mark <= value.addr)

    @staticmethod
    def _row(base: int, value: Value) -> str:
        return (
            f"(i32.add (i32.const {base}) "
            f"(i32.mul (local.get $t) (i32.const {16 * _vectors(value)})))"
        )

    def save(self, value: Value) -> str:
        area = self._areas[(value.addr, value.width)]
        return _copy(self._row(area, value), f"(i32.const {value.addr})", value)

    def restore(self, value: Value) -> str:
        area = self._areas[(value.addr, value.width)]
        return _copy(f"(i32.const {value.addr})", self._row(area, value), value)

    def gather(self, b: int) -> str:
        x = self.tiles[b].x
        return _copy(self._row(self._buffers[b][0], x), f"(i32.const {x.addr})", x)

    def scatter(self, b: int) -> str:
        out = self.tiles[b].out
        return _copy(f"(i32.const {out.addr})", self._row(self._buffers[b][1], out), out)

    def call_tile(self, b: int) -> str:
        """A full tile in one call; a partial one (the batch's last) row by row."""
        name = self._tile_names[b]
        x_buf, out_buf = self._buffers[b]
        tile = self.tiles[b]
        return f"""
      (if (i32.eq (local.get $count) (i32.const {TILE_ROWS}))
        (then (call {name} (i32.const {x_buf}) (i32.const {out_buf})))
        (else
          (local.set $t (i32.const 0))
          (loop $part
            (call {name}_row {self._row(x_buf, tile.x)} {self._row(out_buf, tile.out)})
            (local.set $t (i32.add (local.get $t) (i32.const 1)))
            (br_if $part (i32.lt_s (local.get $t) (local.get $count))))))"""
