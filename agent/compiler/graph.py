"""ONNX graph -> ``Program``: walks the nodes in order, folds constant subgraphs and hands
each remaining node to the lowering registered for its (domain, op type).

The graph's inputs are float32 (or integer) ``[N, k]`` tensors; the ABI row holds them
side by side in graph order (one ``[N, 1]`` input per feature, as skl2onnx writes for a
DataFrame pipeline, or one ``[N, n_features]`` input). Any node whose inputs are all
constants is evaluated at compile time with ONNX's reference evaluator (shape tensors,
class lists, reshaped initializers), so kernels only ever see per-row values and
constant arrays. A node without a lowering raises ``CompileError`` naming its op type and
name: the compiler never emits a module it cannot vouch for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from agent.compiler.ir import DType, Program, Value, fail
from agent.errors import CompileError

ML_DOMAIN = "ai.onnx.ml"
# The compiler's own rewrites of standard nodes (``fuse_relu``): never read from a user's
# graph with another meaning, since no converter writes this domain.
FUSED_DOMAIN = "edge_agent.fused"

Attrs = Mapping[str, Any]
LowerFn = Callable[["Lowering", onnx.NodeProto, Attrs], None]


@dataclass
class Lowering:
    """State shared by the kernels while one graph is lowered."""

    program: Program = field(default_factory=Program)
    values: dict[str, Value] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    _next_kernel: int = 0

    def value(self, node: onnx.NodeProto, index: int) -> Value:
        """The per-row value feeding input ``index`` of ``node``."""
        name = node.input[index] if index < len(node.input) else ""
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            raise fail(node.op_type, node.name, f"input {index} must vary per row, got a constant")
        raise fail(node.op_type, node.name, f"input {index} is missing")

    def const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The constant feeding input ``index``, or None if that input is a row value/absent."""
        name = node.input[index] if index < len(node.input) else ""
        return self.consts.get(name)

    def new_value(
        self,
        name: str,
        width: int,
        rank: int = 2,
        dtype: DType = DType.float,
        classes: tuple[str, ...] | None = None,
        dims: tuple[int, ...] | None = None,
    ) -> Value:
        value = Value(name, self.program.slot(width), width, rank, dtype, classes, dims)
        self.values[name] = value
        return value

    def alias(self, name: str, source: Value, **changes: Any) -> Value:
        """Bind ``name`` to the same cells as ``source`` (reshape, identity, casts that
        change nothing), optionally with different metadata."""
        value = dataclasses.replace(source, name=name, **changes)
        self.values[name] = value
        return value

    def kernel_name(self, node: onnx.NodeProto) -> str:
        self._next_kernel += 1
        return f"$k{self._next_kernel}_{node.op_type}"

    def add_kernel(self, node: onnx.NodeProto, body: str, locals_: str = "") -> None:
        """Add a kernel function (no params, no results) and schedule it for every row. It
        may read ``node``'s row inputs and slots allocated while lowering ``node``."""
        name = self.kernel_name(node)
        reads = tuple(self.values[n] for n in node.input if n in self.values)
        self.program.add_kernel(name, f"(func {name} {locals_}\n{body})\n", reads)


@dataclass(frozen=True)
class LoweredGraph:
    program: Program
    n_features: int
    input: Value
    outputs: dict[str, Value]  # graph output name -> value, in graph order


def _registry() -> dict[tuple[str, str], LowerFn]:
    from agent.compiler import (
        elementwise,
        encoders,
        knn,
        linear,
        svm,
        tree_ensemble,
        trees,
        vectors,
    )

    table: dict[tuple[str, str], LowerFn] = {}
    for family in (elementwise, encoders, knn, linear, svm, tree_ensemble, trees, vectors):
        table.update(family.LOWERINGS)
    return table


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8") for v in value]
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        attrs[attr.name] = value
    return attrs


def lower(
    model: onnx.ModelProto, input_levels: Sequence[Sequence[str]] | None = None
) -> LoweredGraph:
    """Lower a whole model; raises ``CompileError`` on anything it cannot compile.

    ``input_levels`` gives, per graph input, the levels of a text input ``[N, 1]`` (a
    DataFrame's string column): the ABI feeds its level index, and string categories
    compare with it (``encoders``)."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    infos = [i for i in graph.input if i.name not in initializers]
    if not infos:
        raise CompileError("the graph has no input")
    levels = list(input_levels) if input_levels is not None else []
    if len(levels) != len(infos):
        levels = [()] * len(infos)
    inputs = [(i.name, *_input_spec(i, tuple(lv))) for i, lv in zip(infos, levels, strict=True)]
    n_features = sum(width for _, width, _, _ in inputs)
    state = Lowering()
    for init in graph.initializer:
        state.consts[init.name] = numpy_helper.to_array(init)
    x = state.new_value("::row", n_features)
    column = 0
    for name, width, dtype, classes in inputs:
        # Each input is a view of its columns of the row: no copy per row.
        state.values[name] = Value(name, x.cell(column), width, 2, dtype, classes)
        column += width
    table = _registry()
    opsets = {o.domain or "": o.version for o in model.opset_import}
    graph_outputs = {o.name for o in graph.output}
    nodes = fuse_bias(list(graph.node), state.consts, graph_outputs)
    for node in fuse_relu(nodes, {i.name for i in infos}, graph_outputs):
        domain = node.domain or ""
        if domain == "ai.onnx":
            domain = ""
        present = [name for name in node.input if name]
        if all(name in state.consts for name in present):
            _fold(state, node, opsets)
            continue
        lowering = table.get((domain, node.op_type))
        if lowering is None:
            raise CompileError(
                f"unsupported operator {domain or 'ai.onnx'}:{node.op_type} (node {node.name!r})"
            )
        lowering(state, node, attributes(node))
    outputs: dict[str, Value] = {}
    for out in graph.output:
        if out.name not in state.values:
            raise CompileError(f"graph output {out.name!r} is a constant or was never computed")
        outputs[out.name] = state.values[out.name]
    return LoweredGraph(state.program, n_features, x, outputs)


def fuse_bias(
    nodes: list[onnx.NodeProto], consts: Mapping[str, np.ndarray], outputs: set[str]
) -> list[onnx.NodeProto]:
    """``MatMul(x, W)`` whose only consumer is ``Add`` with a constant bias of one value per
    output (how converters write every dense layer) -> one ``Gemm(x, W, bias)`` in the
    MatMul's place, named for the Add's output: the dense kernel starts its accumulators
    from the bias instead of running a separate kernel per row. The sum is rounded in a
    different order (bias first), well within f32 parity."""
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    producers = {
        node.output[0]: i
        for i, node in enumerate(nodes)
        if node.op_type == "MatMul" and (node.domain or "") in ("", "ai.onnx")
    }
    fused: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for j, node in enumerate(nodes):
        if node.op_type != "Add" or (node.domain or "") not in ("", "ai.onnx"):
            continue
        for product, bias in (node.input[:2], node.input[1::-1]):
            i = producers.get(product)
            if i is None or i in fused or uses.get(product) != 1 or product in outputs:
                continue
            weights = consts.get(nodes[i].input[1])
            b = consts.get(bias)
            if (
                weights is None
                or weights.ndim != 2
                or b is None
                or not 1 <= b.ndim <= 2
                or b.size != weights.shape[1]
                or b.shape[-1] != weights.shape[1]
            ):
                continue
            fused[i] = helper.make_node(
                "Gemm",
                [nodes[i].input[0], nodes[i].input[1], bias],
                [node.output[0]],
                name=f"{nodes[i].name}+{node.name}",
            )
            dropped.add(j)
            break
    return [fused.get(i, node) for i, node in enumerate(nodes) if i not in dropped]


def fuse_relu(
    nodes: list[onnx.NodeProto], inputs: set[str], outputs: set[str]
) -> list[onnx.NodeProto]:
    """``Relu(Gemm(x, ...))`` or ``Relu(MatMul(x, ...))`` on a row value ``x`` (one that
    depends on the graph's ``inputs``; a constant one is folded instead) whose product
    nothing else reads, as every MLP's hidden layer -> one ``edge_agent.fused`` Gemm or
    MatMul with attribute ``activation="Relu"``, named for the Relu's output: the dense
    kernel clamps its accumulators as it stores them (``f32x4.max`` with 0, the very
    operation of the element-wise Relu, so the answers are the same bits) instead of a
    separate kernel and a row-by-row pass between two batched layers."""
    uses: dict[str, int] = {}
    per_row = set(inputs)
    for node in nodes:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
        if any(name in per_row for name in node.input):
            per_row.update(node.output)
    producers = {
        node.output[0]: i
        for i, node in enumerate(nodes)
        if node.op_type in ("Gemm", "MatMul") and (node.domain or "") in ("", "ai.onnx")
    }
    fused: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for j, node in enumerate(nodes):
        if node.op_type != "Relu" or (node.domain or "") not in ("", "ai.onnx"):
            continue
        product = node.input[0]
        i = producers.get(product)
        if i is None or uses.get(product) != 1 or product in outputs:
            continue
        if nodes[i].input[0] not in per_row:
            continue
        layer = onnx.NodeProto()
        layer.CopyFrom(nodes[i])
        layer.domain = FUSED_DOMAIN
        layer.output[0] = node.output[0]
        layer.name = f"{nodes[i].name}+{node.name}"
        layer.attribute.append(helper.make_attribute("activation", "Relu"))
        fused[i] = layer
        dropped.add(j)
    return [fused.get(i, node) for i, node in enumerate(nodes) if i not in dropped]


_INTEGER_INPUTS = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def _input_spec(
    info: onnx.ValueInfoProto, levels: tuple[str, ...]
) -> tuple[int, DType, tuple[str, ...] | None]:
    """Width, dtype and levels of a graph input. ABI v1 feeds f32 cells: float32 inputs
    as they are, integer inputs (category codes) as whole numbers (exact up to 2**24),
    a text input ``[N, 1]`` with ``levels`` as the level's index."""
    tensor = info.type.tensor_type
    classes: tuple[str, ...] | None = None
    if tensor.elem_type == onnx.TensorProto.FLOAT:
        dtype = DType.float
    elif tensor.elem_type in _INTEGER_INPUTS:
        dtype = DType.int
    elif tensor.elem_type == onnx.TensorProto.STRING and levels:
        dtype, classes = DType.string, levels
    elif tensor.elem_type == onnx.TensorProto.STRING:
        raise CompileError(
            f"input {info.name!r} is text: its levels must be known (a categorical feature "
            "of the schema, or the OneHotEncoder's categories)"
        )
    else:
        raise CompileError(
            f"input {info.name!r} must be float32 or integer (ABI v1 feeds f32), found "
            f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}"
        )
    dims = tensor.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value") or dims[1].dim_value < 1:
        raise CompileError(f"input {info.name!r} must have shape [N, k], width fixed")
    if classes is not None and dims[1].dim_value != 1:
        raise CompileError(f"text input {info.name!r} must have shape [N, 1]")
    return int(dims[1].dim_value), dtype, classes


def _fold(state: Lowering, node: onnx.NodeProto, opsets: Mapping[str, int]) -> None:
    """Evaluate a node whose inputs are all constants, with ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: state.consts[name] for name in node.input if name}
    graph = helper.make_graph(
        [node],
        "fold",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in feeds.items()
        ],
        [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output],
    )
    opset = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    try:
        results = ReferenceEvaluator(helper.make_model(graph, opset_imports=opset)).run(None, feeds)
    except Exception as exc:  # the reference evaluator raises many types
        raise fail(node.op_type, node.name, "constant folding failed") from exc
    for name, result in zip(node.output, results, strict=False):
        if name:
            state.consts[name] = np.asarray(result)
