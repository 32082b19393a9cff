"""Which graph outputs become which ABI output columns, and what the manifest calls them.

A classifier (a label output carrying class indices plus a probability output with one
column per class) becomes ``label`` (kind ``class``, the index into ``classes``) followed
by ``probability_<class>`` per class. Anything with one numeric output becomes ``value``
(or ``value_<i>`` for several targets, kind ``score``). Other signatures are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.bundle.manifest import OutputKind, OutputSpec
from agent.compiler.graph import LoweredGraph
from agent.compiler.ir import DType, Value
from agent.errors import CompileError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Signature:
    values: list[Value]  # graph values in ABI column order
    outputs: list[OutputSpec]  # one per ABI column
    task: str  # "classification" or "regression"


def signature(graph: LoweredGraph) -> Signature:
    values = list(graph.outputs.values())
    if len(values) == 2 and values[0].classes is not None:
        label, probabilities = values
        classes = label.classes or ()
        if probabilities.classes not in (None, classes) or probabilities.width != len(classes):
            raise CompileError("the probability output does not have one column per class")
        if label.width != 1 or probabilities.dtype is not DType.float:
            raise CompileError("unsupported classifier outputs")
        specs = [OutputSpec(name="label", kind=OutputKind.label, classes=list(classes))]
        names = {f"probability_{_UNSAFE.sub('_', c)}" for c in classes}
        if len(names) != len(classes):
            raise CompileError("class labels collide once made into output names")
        specs += [
            OutputSpec(
                name=f"probability_{_UNSAFE.sub('_', c)}",
                kind=OutputKind.probability,
                class_label=c,
            )
            for c in classes
        ]
        return Signature([label, probabilities], specs, "classification")
    if len(values) == 1 and values[0].classes is None and values[0].dtype is not DType.string:
        width = values[0].width
        columns = ["value"] if width == 1 else [f"value_{i}" for i in range(width)]
        specs = [OutputSpec(name=n, kind=OutputKind.score) for n in columns]
        return Signature(values, specs, "regression")
    raise CompileError(
        "unsupported output signature: expected (label, probabilities) or one numeric output"
    )
