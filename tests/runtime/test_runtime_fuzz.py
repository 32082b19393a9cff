"""Mutated modules: whatever the bytes, loading and scoring end in a result or a typed
error, never a crash or a hang (the runtime's promise to the rest of the agent)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import AbiViolation, ModelDeadline, ModelTrap
from agent.limits import Limits
from agent.runtime.model import WasmModel

WASM = (
    Path(__file__).resolve().parents[2]
    / "fixtures"
    / "demo"
    / "build"
    / "deterioration"
    / "model.wasm"
).read_bytes()
LIMITS = Limits(model_fuel_per_row=100_000, model_memory_max=8 * 1024 * 1024)
ROW = [82.0, 18.0, 37.2, 121.0, 96.0, 7.1, 88.0, 71.0, 1.0]


@settings(max_examples=60, deadline=None)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(WASM) - 1), st.integers(1, 255)), min_size=1, max_size=4
    ),
    truncate=st.one_of(st.none(), st.integers(0, len(WASM) - 1)),
)
def test_mutated_modules_fail_cleanly(flips: list[tuple[int, int]], truncate: int | None) -> None:
    blob = bytearray(WASM)
    for offset, mask in flips:
        blob[offset] ^= mask
    if truncate is not None:
        del blob[truncate:]
    try:
        model = WasmModel.load(bytes(blob), limits=LIMITS)
    except AbiViolation:
        return
    try:
        result = model.predict([ROW[: model.n_features] + [0.0] * (model.n_features - 9)])
    except (ModelTrap, ModelDeadline):
        return
    assert len(result) == 1 and len(result[0]) == model.n_outputs
