"""ABI v1 of an edge-agent model module: the names, types and codes a conforming module
exports. docs/abi.md is the prose version of this file; the two change together, and any
incompatible change bumps ``ABI_VERSION``.

A leaf module: no imports from the package, so a compiler and a runtime share one truth.
"""

from __future__ import annotations

from typing import Final

ABI_VERSION: Final = 1

# Element type of every input and output cell: IEEE 754 binary32, little endian.
CELL_BYTES: Final = 4

MEMORY_EXPORT: Final = "memory"

ABI_VERSION_EXPORT: Final = "edge_abi_version"
N_FEATURES_EXPORT: Final = "edge_n_features"
N_OUTPUTS_EXPORT: Final = "edge_n_outputs"
MAX_BATCH_EXPORT: Final = "edge_max_batch"
INPUT_PTR_EXPORT: Final = "edge_input_ptr"
OUTPUT_PTR_EXPORT: Final = "edge_output_ptr"
PREDICT_EXPORT: Final = "edge_predict"

# name -> (parameter types, result types), as wasm value type names.
FUNCTION_EXPORTS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    ABI_VERSION_EXPORT: ((), ("i32",)),
    N_FEATURES_EXPORT: ((), ("i32",)),
    N_OUTPUTS_EXPORT: ((), ("i32",)),
    MAX_BATCH_EXPORT: ((), ("i32",)),
    INPUT_PTR_EXPORT: ((), ("i32",)),
    OUTPUT_PTR_EXPORT: ((), ("i32",)),
    PREDICT_EXPORT: (("i32",), ("i32",)),
}

# Status codes returned by edge_predict.
STATUS_OK: Final = 0
STATUS_BAD_BATCH: Final = 1  # n_rows < 0 or n_rows > edge_max_batch()
STATUS_BAD_INPUT: Final = 2  # the module refused a value (e.g. a category index out of range)
STATUS_INTERNAL: Final = 3  # the module detected an inconsistency in itself

STATUS_NAMES: Final[dict[int, str]] = {
    STATUS_OK: "ok",
    STATUS_BAD_BATCH: "bad_batch",
    STATUS_BAD_INPUT: "bad_input",
    STATUS_INTERNAL: "internal",
}

# Bounds a module's self-description must respect to be loaded at all.
MAX_FEATURES: Final = 65_536
MAX_OUTPUTS: Final = 65_536
