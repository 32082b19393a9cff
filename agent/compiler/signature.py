"""Which graph outputs become which ABI output columns, and what the manifest calls them.

A classifier (a label output carrying class indices plus a probability output with one
column per class) becomes ``label`` (kind ``class``, the index into ``classes``) followed
by ``probability_<class>`` per class. Anything with one numeric output becomes ``value``
(or ``value_<i>`` for several targets, kind ``score``). Other signatures are refused.

A hand-made or PyTorch ONNX graph cannot say that its output is a probability: its
builder declares it, one ``OutputDeclaration`` per graph output in graph order, written
``KIND[:classes=A,B,...][;names=N1,N2,...]`` (``parse_declaration``):

* ``probability:classes=no,yes``: one column per class, ``probability_<class>``;
* ``class:classes=low,high``: one column holding a class index, ``label``;
* ``score`` (``names=`` for several columns): ``value`` / ``value_<i>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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


@dataclass(frozen=True)
class OutputDeclaration:
    """What one graph output is, declared by the model's builder."""

    kind: OutputKind
    classes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()


_KEYS = ("classes", "names")


def parse_declaration(text: str) -> OutputDeclaration:
    """``probability:classes=0,1`` -> an ``OutputDeclaration``; ``CompileError`` naming
    the part that is wrong."""
    kind_text, _, rest = text.strip().partition(":")
    try:
        kind = OutputKind(kind_text.strip())
    except ValueError:
        raise CompileError(
            f"output declaration {text!r}: the kind must be one of {[k.value for k in OutputKind]}"
        ) from None
    parts: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (p.strip() for p in rest.split(";"))):
        key, equals, values = item.partition("=")
        if key.strip() not in _KEYS or not equals or key.strip() in parts:
            raise CompileError(f"output declaration {text!r}: expected classes=... or names=...")
        parts[key.strip()] = tuple(v.strip() for v in values.split(",") if v.strip())
    declaration = OutputDeclaration(kind, parts.get("classes", ()), parts.get("names", ()))
    if kind is not OutputKind.score and not declaration.classes:
        raise CompileError(f"output declaration {text!r}: {kind.value} needs classes=...")
    if kind is OutputKind.score and declaration.classes:
        raise CompileError(f"output declaration {text!r}: a score has no classes")
    return declaration


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)


def declared_signature(graph: LoweredGraph, declared: Sequence[OutputDeclaration]) -> Signature:
    """The signature the builder declared: one declaration per graph output, in order,
    each checked against the output's width."""
    values = list(graph.outputs.values())
    if len(declared) != len(values):
        raise CompileError(
            f"{len(declared)} output declarations for a graph with {len(values)} outputs "
            f"({', '.join(graph.outputs)})"
        )
    specs: list[OutputSpec] = []
    for (name, value), declaration in zip(graph.outputs.items(), declared, strict=True):
        if (
            declaration.kind is OutputKind.probability
            and value.addr in graph.program.decision_scores
        ):
            raise CompileError(f"graph output {name!r} is raw decision scores, not probabilities")
        if value.dtype is DType.string and value.classes is None:
            raise CompileError(f"graph output {name!r} holds text the ABI cannot carry")
        kind, classes = declaration.kind, list(declaration.classes)
        if kind is OutputKind.label:
            width = 1
            names = ["label"]
        elif kind is OutputKind.probability:
            width = len(classes)
            names = [f"probability_{_safe(c)}" for c in classes]
        else:
            width = value.width
            names = ["value"] if width == 1 else [f"value_{i}" for i in range(width)]
        if declaration.names:
            names = list(declaration.names)
        if value.width != width or len(names) != width:
            raise CompileError(
                f"graph output {name!r} has {value.width} columns, its declaration "
                f"{kind.value} names {len(names)}"
            )
        for i, column in enumerate(names):
            specs.append(
                OutputSpec(
                    name=column,
                    kind=kind,
                    classes=classes if kind is OutputKind.label else [],
                    class_label=classes[i] if kind is OutputKind.probability else None,
                )
            )
    if len({s.name for s in specs}) != len(specs):
        raise CompileError("declared output names collide")
    task = (
        "classification"
        if any(d.kind is not OutputKind.score for d in declared)
        else ("regression")
    )
    return Signature(values, specs, task)


def signature(graph: LoweredGraph) -> Signature:
    values = list(graph.outputs.values())
    if len(values) == 2 and values[0].classes is not None:
        label, probabilities = values
        classes = label.classes or ()
        if probabilities.classes not in (None, classes) or probabilities.width != len(classes):
            raise CompileError("the probability output does not have one column per class")
        if label.width != 1 or probabilities.dtype is not DType.float:
            raise CompileError("unsupported classifier outputs")
        if probabilities.addr in graph.program.decision_scores:
            raise CompileError(
                "the classifier's second output is raw decision scores, not probabilities "
                "(an SVM without probability estimates); declare the outputs if that is meant"
            )
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
