"""The sandbox against hostile and broken modules, written by hand in WAT."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import wasmtime

from agent.errors import AbiViolation, ModelDeadline, ModelTrap, RecordError
from agent.limits import Limits
from agent.runtime.model import WasmModel

LIMITS = Limits(model_fuel_per_row=200_000, model_memory_max=4 * 65536)

# A conforming module: 2 features, 1 output = x0 + x1; x0 == 13 loops forever, x0 == 66
# traps, x0 == 99 grows memory until refused and then traps, x0 == 7 returns status 2.
GOOD = """
(module
  (memory (export "memory") 1)
  (func (export "edge_abi_version") (result i32) i32.const 1)
  (func (export "edge_n_features") (result i32) i32.const 2)
  (func (export "edge_n_outputs") (result i32) i32.const 1)
  (func (export "edge_max_batch") (result i32) i32.const 8)
  (func (export "edge_input_ptr") (result i32) i32.const 0)
  (func (export "edge_output_ptr") (result i32) i32.const 1024)
  (func (export "edge_predict") (param $n i32) (result i32) (local $i i32) (local $x f32)
    (block $done (loop $rows
      (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
      (local.set $x (f32.load (i32.shl (local.get $i) (i32.const 3))))
      (if (f32.eq (local.get $x) (f32.const 13)) (then (loop $forever (br $forever))))
      (if (f32.eq (local.get $x) (f32.const 66)) (then unreachable))
      (if (f32.eq (local.get $x) (f32.const 7)) (then (return (i32.const 2))))
      (if (f32.eq (local.get $x) (f32.const 99)) (then
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        unreachable))
      (f32.store (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2)))
        (f32.add (local.get $x) (f32.load offset=4 (i32.shl (local.get $i) (i32.const 3)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rows)))
    i32.const 0))
"""


def load(wat: str, fast_path: bool = True, limits: Limits = LIMITS) -> WasmModel:
    return WasmModel.load(wasmtime.wat2wasm(wat), limits=limits, fast_path=fast_path)


# A call budgeted past 5,000,000 fuel releases the GIL on the fast path (shorter ones keep
# it): at this much fuel per row, every call of the fast path releases it.
RELEASING = Limits(model_fuel_per_row=5_000_001, model_memory_max=LIMITS.model_memory_max)


@pytest.fixture(
    params=[(True, LIMITS), (True, RELEASING), (False, LIMITS)],
    ids=["fast-path", "fast-path-gil-released", "public-api"],
)
def model(request: pytest.FixtureRequest) -> WasmModel:
    fast_path, limits = request.param
    return load(GOOD, fast_path=fast_path, limits=limits)


def test_good_module_scores_rows_in_batches(model: WasmModel) -> None:
    rows = [[float(i + 100), 0.5] for i in range(20)]  # 20 rows > max_batch 8: 3 calls
    assert model.n_features == 2 and model.n_outputs == 1 and model.max_batch == 8
    assert model.predict(rows) == [[i + 100.5] for i in range(20)]
    assert model.predict([]) == []


def test_infinite_loop_hits_the_deadline_and_the_model_keeps_serving(model: WasmModel) -> None:
    with pytest.raises(ModelDeadline):
        model.predict([[13.0, 0.0]])
    assert model.predict([[1.0, 2.0]]) == [[3.0]]


def test_trap_is_reported_and_the_model_keeps_serving(model: WasmModel) -> None:
    with pytest.raises(ModelTrap, match="unreachable"):
        model.predict([[1.0, 1.0], [66.0, 0.0]])
    assert model.predict([[1.0, 2.0]]) == [[3.0]]


def test_memory_growth_is_capped(model: WasmModel) -> None:
    with pytest.raises(ModelTrap):
        model.predict([[99.0, 0.0]])
    assert model.predict([[2.0, 2.0]]) == [[4.0]]


def test_memory_cap_holds_during_growth() -> None:
    """The failing memory.grow happens at the cap: pages never exceed it."""
    probe = GOOD.replace(
        "(local.set $x (f32.load (i32.shl (local.get $i) (i32.const 3))))",
        "(local.set $x (f32.load (i32.shl (local.get $i) (i32.const 3))))"
        "(if (f32.eq (local.get $x) (f32.const 5)) (then"
        " (loop $g (br_if $g (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))"
        " (f32.store (i32.const 1024) (f32.convert_i32_u (memory.size))) (return (i32.const 0))))",
    )
    pages = load(probe).predict([[5.0, 0.0]])[0][0]
    assert pages == LIMITS.model_memory_max // 65536


def test_non_zero_status_is_a_trap_naming_the_status(model: WasmModel) -> None:
    with pytest.raises(ModelTrap, match=r"status 2 \(bad_input\)"):
        model.predict([[7.0, 0.0]])
    assert model.predict([[1.0, 2.0]]) == [[3.0]]


def test_rows_of_the_wrong_width_or_type_are_refused(model: WasmModel) -> None:
    with pytest.raises(RecordError, match="3 values"):
        model.predict([[1.0, 2.0, 3.0]])
    with pytest.raises(RecordError):
        model.predict([[1.0, None]])  # type: ignore[list-item]


def test_concurrent_callers_get_their_own_answers(model: WasmModel) -> None:
    errors: list[str] = []

    def worker(offset: int) -> None:
        for i in range(200):
            rows = [[float(offset), float(i)], [float(i + 200), 1.0]]
            if model.predict(rows) != [[float(offset + i)], [float(i + 201)]]:
                errors.append(f"{offset}/{i}")

    threads = [threading.Thread(target=worker, args=(k * 1000 + 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# GOOD, where x0 == 21 first counts to 300,000 (about 1.5 million fuel, a fraction of a ms).
SLOW = GOOD.replace(
    "(if (f32.eq (local.get $x) (f32.const 13))",
    "(if (f32.eq (local.get $x) (f32.const 21)) (then (local.set $x (f32.const 0))"
    " (loop $count (local.set $x (f32.add (local.get $x) (f32.const 1)))"
    " (br_if $count (f32.lt (local.get $x) (f32.const 300000))))))"
    "(if (f32.eq (local.get $x) (f32.const 13))",
)


def test_a_one_row_call_keeps_the_gil_and_a_batch_releases_it() -> None:
    """With one row's default budget (5,000,000 fuel), a one-row call runs without letting
    another thread in (a writer thread cannot take the GIL from the request there); a
    two-row call releases it, so other threads run while the module works."""
    model = load(SLOW, limits=Limits(model_fuel_per_row=5_000_000))
    assert model.predict([[21.0, 0.0]]) == [[300_000.0]]
    ran = 0
    stop = threading.Event()

    def other() -> None:
        nonlocal ran
        while not stop.is_set():
            ran += 1
            time.sleep(0.0001)  # without the GIL, so the test's thread takes it at once

    interval = sys.getswitchinterval()
    sys.setswitchinterval(60.0)  # no forced switch: `other` runs only where the GIL is let go
    thread = threading.Thread(target=other)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        for _ in range(20):  # had a call let the GIL go, `other` would have run in one
            before = ran
            assert model.predict([[21.0, 0.0]]) == [[300_000.0]]
            assert ran == before
            while ran == before and time.monotonic() < deadline:
                time.sleep(0.001)
        before = ran
        while ran == before and time.monotonic() < deadline:
            assert model.predict([[21.0, 0.0], [21.0, 1.0]]) == [[300_000.0], [300_001.0]]
        assert ran > before
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


WASI_IMPORT = GOOD.replace(
    "(module",
    '(module (import "wasi_snapshot_preview1" "fd_write" '
    "(func (param i32 i32 i32 i32) (result i32)))",
    1,
)
HOST_IMPORT = GOOD.replace("(module", '(module (import "env" "leak" (func (param i32)))', 1)


@pytest.mark.parametrize(
    ("wat", "rule"),
    [
        (WASI_IMPORT, "imports nothing.*wasi_snapshot_preview1.fd_write"),
        (HOST_IMPORT, "imports nothing.*env.leak"),
        (GOOD.replace('(export "edge_predict")', ""), "exports edge_predict"),
        (GOOD.replace('(memory (export "memory") 1)', "(memory 1)"), "exports memory"),
        (
            GOOD.replace(
                '(func (export "edge_max_batch") (result i32) i32.const 8)',
                '(func (export "edge_max_batch") (result i64) i64.const 8)',
            ),
            "exports edge_max_batch.*type",
        ),
        (
            GOOD.replace(
                '(func (export "edge_abi_version") (result i32) i32.const 1)',
                '(func (export "edge_abi_version") (result i32) i32.const 2)',
            ),
            "edge_abi_version",
        ),
        (GOOD.replace("i32.const 1024)\n", "i32.const 65534)\n", 1), "output region"),
        (
            GOOD.replace(
                '(export "edge_n_features") (result i32) i32.const 2',
                '(export "edge_n_features") (result i32) i32.const 0',
            ),
            "n_features",
        ),
    ],
    ids=[
        "wasi-import",
        "host-import",
        "missing-export",
        "missing-memory",
        "mistyped-export",
        "wrong-abi-version",
        "output-outside-memory",
        "zero-features",
    ],
)
def test_non_conforming_modules_are_refused(wat: str, rule: str) -> None:
    with pytest.raises(AbiViolation, match=rule):
        load(wat)


def test_a_start_function_that_never_ends_is_refused() -> None:
    looping = GOOD.replace("(module", "(module (func $start (loop $l (br $l))) (start $start)", 1)
    with pytest.raises(AbiViolation, match="instantiate"):
        load(looping)


def test_garbage_and_oversized_modules_are_refused() -> None:
    with pytest.raises(AbiViolation, match="not valid WebAssembly"):
        WasmModel.load(b"\0asm garbage", limits=LIMITS)
    with pytest.raises(AbiViolation, match="wasm_module_max"):
        WasmModel.load(b"\0" * 2048, limits=Limits(wasm_module_max=1024))


def test_the_minimal_module_in_docs_abi_md_conforms() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "abi.md").read_text("utf-8")
    wat = doc.split("```wat\n", 1)[1].split("```", 1)[0]
    model = load(wat, limits=Limits())
    assert model.predict([[1.5, 2.0], [3.0, -1.0]]) == [[3.5], [2.0]]


def test_numpy_rows_and_tuples_are_accepted(model: WasmModel) -> None:
    import numpy as np

    rows = np.array([[1.5, 2.0], [3.0, 4.0]], dtype=np.float32)
    assert model.predict(rows) == [[3.5], [7.0]]  # type: ignore[arg-type]
    assert model.predict([(1.0, np.float64(2.0))]) == [[3.0]]


def test_values_beyond_f32_round_to_infinity_and_strings_are_refused(model: WasmModel) -> None:
    """The fast struct path refuses what the ctypes path rounds: both paths agree."""
    assert model.predict([[1e39, 1.0], [2.0, 3.0]]) == [[float("inf")], [5.0]]
    assert model.predict([[-1e39, 1.0]]) == [[float("-inf")]]
    with pytest.raises(RecordError, match="non-number"):
        model.predict([[1.0, "2"]])  # type: ignore[list-item]


def test_float32_matrices_are_copied_as_bytes_and_others_converted(model: WasmModel) -> None:
    import numpy as np

    rows = np.arange(40, dtype=np.float32).reshape(20, 2) + 100  # > max_batch: 3 calls
    expected = [[float(a + b)] for a, b in rows.tolist()]
    assert model.predict(rows) == expected  # type: ignore[arg-type]
    assert model.predict(rows.astype(np.float64)) == expected  # type: ignore[arg-type]
    assert model.predict(np.asfortranarray(rows)) == expected  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="3 values"):
        model.predict(np.zeros((2, 3), dtype=np.float32))  # type: ignore[arg-type]


@pytest.mark.parametrize("n_rows", [0, 1, 3, 8, 20])
def test_a_float32_matrix_scores_to_a_flat_float32_array(model: WasmModel, n_rows: int) -> None:
    """``predict_matrix``: bytes in, bytes out, in calls of at most ``max_batch`` (8) rows,
    the same answers as ``predict``; stdlib buffers work without numpy."""
    import array

    cells = array.array("f", [float(v) for v in range(2 * n_rows)])
    if n_rows:
        matrix: object = memoryview(cells).cast("B").cast("f", [n_rows, 2])
    else:
        import numpy as np

        matrix = np.zeros((0, 2), dtype=np.float32)
    result = model.predict_matrix(matrix)
    assert result.typecode == "f"
    assert result.tolist() == [2.0 * (2 * i) + 1.0 for i in range(n_rows)]


def test_predict_matrix_refuses_other_layouts_and_keeps_serving_after_a_trap(
    model: WasmModel,
) -> None:
    import numpy as np

    for wrong in (
        np.zeros((2, 2), dtype=np.float64),
        np.asfortranarray(np.zeros((2, 2), dtype=np.float32)),
        [[1.0, 2.0]],
    ):
        with pytest.raises(RecordError, match="C-contiguous 2-D float32"):
            model.predict_matrix(wrong)
    with pytest.raises(RecordError, match="3 values"):
        model.predict_matrix(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ModelTrap, match="unreachable"):
        model.predict_matrix(np.array([[66.0, 0.0]], dtype=np.float32))
    assert model.predict_matrix(np.array([[1.0, 2.0]], dtype=np.float32)).tolist() == [3.0]
