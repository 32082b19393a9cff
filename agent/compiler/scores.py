"""What classifiers share after their raw scores: ONNX ``post_transform`` and the
winning class. Scores sit in an f32 slot; transforms follow ONNX Runtime (logistic of each
score, or a numerically stable softmax), computed in f64 and rounded to f32.
"""

from __future__ import annotations

import onnx

from agent.compiler.graph import Lowering
from agent.compiler.ir import CELL, fail
from agent.compiler.vectors import SOFTMAX_LOCALS, softmax_body
from agent.compiler.wat import Operand, cell_loop, store_cell, via_f64

TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX")


def transform_kernel(
    state: Lowering, node: onnx.NodeProto, post: str, src: int, dst: int, width: int
) -> None:
    """Add a kernel writing ``post_transform(src)`` into ``dst`` (both ``width`` cells)."""
    if post == "NONE":
        body = f"(memory.copy (i32.const {dst}) (i32.const {src}) (i32.const {width * CELL}))"
        state.add_kernel(node, body)
    elif post == "LOGISTIC":
        state.program.helpers.add("sigmoid")
        expr = via_f64("sigmoid", Operand(src, CELL).load())
        state.add_kernel(node, cell_loop(width, store_cell(dst, expr)), "(local $o i32)")
    elif post == "SOFTMAX":
        state.program.helpers.add("exp")
        state.add_kernel(node, softmax_body(src, dst, width), SOFTMAX_LOCALS)
    else:
        raise fail(node.op_type, node.name, f"post_transform {post} is not supported")


def class_labels(node: onnx.NodeProto, attrs: dict[str, object]) -> tuple[tuple[str, ...], bool]:
    """The class list of a classifier node and whether the labels are strings."""
    strings = attrs.get("classlabels_strings")
    if isinstance(strings, list) and strings:
        return tuple(str(s) for s in strings), True
    for name in ("classlabels_int64s", "classlabels_ints"):  # TreeEnsemble*, LinearClassifier
        ints = attrs.get(name)
        if isinstance(ints, list) and ints:
            return tuple(str(int(i)) for i in ints), False
    raise fail(node.op_type, node.name, "no class labels")
