"""Categorical encoders of ai.onnx.ml on numeric codes: OneHotEncoder and LabelEncoder.

Categorical features reach a module as level indices (see docs/abi.md): numeric
categories compare codes; string categories (``cats_strings``) apply only to a text graph
input declared with its levels, whose cells hold the level index.
"""

from __future__ import annotations

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, f32_literal, fail


def _one_hot(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    """Numeric categories compare the cell with each category; string categories apply to
    a text input fed as a level index (``classes`` = its levels): each category becomes
    its level's index, and a category that is no level never matches."""
    x = state.value(node, 0)
    if "cats_strings" in attrs:
        if x.dtype is not DType.string or x.classes is None:
            raise fail(node.op_type, node.name, "string categories need a text input with levels")
        levels = x.classes
        names = [str(c) for c in attrs["cats_strings"]]
        cats = [float(levels.index(c)) if c in levels else -1.0 for c in names]
        # every level is a category: an unknown value cannot reach the module
        known = set(levels) <= set(names)
    else:
        cats = [float(c) for c in attrs.get("cats_int64s", [])]
        known = False
    if not cats:
        raise fail(node.op_type, node.name, "no categories")
    if int(attrs.get("zeros", 1)) != 1 and not known:
        raise fail(node.op_type, node.name, "zeros=0 (fail on unknown categories) is not supported")
    # Output [N, C, K]: one block of K indicator cells per input cell.
    dims = (x.width, len(cats)) if x.rank == 2 else None
    out = state.new_value(node.output[0], x.width * len(cats), x.rank + 1, dims=dims)
    lines = []
    for c in range(x.width):
        cell = f"(f32.load (i32.const {x.cell(c)}))"
        for k, category in enumerate(cats):
            hit = f"(f32.eq {cell} (f32.const {f32_literal(category)}))"
            lines.append(
                f"(f32.store (i32.const {out.cell(c * len(cats) + k)}) (f32.convert_i32_u {hit}))"
            )
    state.add_kernel(node, "\n".join(lines))


def _label_encoder(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = state.value(node, 0)
    keys = attrs.get("keys_floats") or attrs.get("keys_int64s")
    values = attrs.get("values_floats") or attrs.get("values_int64s")
    if keys is None or values is None or "keys_strings" in attrs or "values_strings" in attrs:
        raise fail(node.op_type, node.name, "only numeric keys and values are supported")
    if len(keys) != len(values) or not keys:
        raise fail(node.op_type, node.name, "keys and values differ in length")
    integer_values = "values_int64s" in attrs
    default = float(
        attrs.get("default_int64", -1) if integer_values else attrs.get("default_float", -0.0)
    )
    table = np.column_stack([np.asarray(keys, np.float32), np.asarray(values, np.float32)])
    t_addr = state.program.add_f32(table.reshape(-1))
    out = state.new_value(
        node.output[0], x.width, x.rank, DType.int if integer_values else DType.float
    )
    body = []
    for c in range(x.width):
        body.append(f"""(local.set $v (f32.load (i32.const {x.cell(c)})))
(local.set $r (f32.const {f32_literal(default)}))
(local.set $p (i32.const {t_addr}))
(block $found (loop $keys
  (if (f32.eq (local.get $v) (f32.load (local.get $p))) (then
    (local.set $r (f32.load offset=4 (local.get $p))) (br $found)))
  (local.set $p (i32.add (local.get $p) (i32.const {2 * CELL})))
  (br_if $keys (i32.lt_u (local.get $p) (i32.const {t_addr + 2 * CELL * len(keys)})))))
(f32.store (i32.const {out.cell(c)}) (local.get $r))""")
    state.add_kernel(node, "\n".join(body), "(local $v f32) (local $r f32) (local $p i32)")


LOWERINGS: dict[tuple[str, str], LowerFn] = {
    (ML_DOMAIN, "OneHotEncoder"): _one_hot,
    (ML_DOMAIN, "LabelEncoder"): _label_encoder,
}
