"""Operators one by one, in hand-built ONNX graphs, against onnxruntime; and the refusals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.compiler import trees
from agent.errors import CompileError
from tests.compiler.compiler_helpers import label_indices, run_compiled, run_onnxruntime

RNG = np.random.default_rng(7)
X = (RNG.normal(size=(64, 4)) * 2).astype(np.float32)
X[3, 1] = 0.0
X[5] = [1.0, 1.0, -1.0, 1.0]

ML = "ai.onnx.ml"
Node = onnx.NodeProto


def const(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def graph_model(
    nodes: list[Node],
    width: int,
    inits: list[onnx.TensorProto] | None = None,
    out_type: int = TensorProto.FLOAT,
    opset: int = 17,
    outputs: list[onnx.ValueInfoProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        outputs or [helper.make_tensor_value_info("Y", out_type, [None, width])],
        initializer=inits or [],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ML, 3)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "where-less-exp-log-abs": lambda: graph_model(
        [
            helper.make_node("Less", ["X", "c"], ["m"]),
            helper.make_node("Exp", ["X"], ["e"]),
            helper.make_node("Abs", ["X"], ["a"]),
            helper.make_node("Add", ["a", "one"], ["a1"]),
            helper.make_node("Log", ["a1"], ["l"]),
            helper.make_node("Where", ["m", "e", "l"], ["Y"]),
        ],
        4,
        [const("c", [[0.5, 0.0, -0.5, 1.0]]), const("one", 1.0)],
    ),
    "greater-cast-mul": lambda: graph_model(
        [
            helper.make_node("Greater", ["X", "z"], ["g"]),
            helper.make_node("Cast", ["g"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "X"], ["Y"]),
        ],
        4,
        [const("z", [0.0])],
    ),
    "clip-div-sub": lambda: graph_model(
        [
            helper.make_node("Clip", ["X", "lo", "hi"], ["c"]),
            helper.make_node("Div", ["c", "d"], ["q"]),
            helper.make_node("Sub", ["q", "X"], ["Y"]),
        ],
        4,
        [const("lo", -1.0), const("hi", 1.5), const("d", [2.0, -3.0, 0.5, 7.0])],
    ),
    "unary-math": lambda: graph_model(
        [
            helper.make_node("Sigmoid", ["X"], ["s"]),
            helper.make_node("Tanh", ["X"], ["t"]),
            helper.make_node("Relu", ["X"], ["r"]),
            helper.make_node("Neg", ["X"], ["n"]),
            helper.make_node("Abs", ["X"], ["a"]),
            helper.make_node("Sqrt", ["a"], ["q"]),
            helper.make_node("Floor", ["X"], ["f"]),
            helper.make_node("Ceil", ["X"], ["c"]),
            helper.make_node("Concat", ["s", "t", "r", "n", "q", "f", "c"], ["Y"], axis=1),
        ],
        28,
    ),
    "softmax-argmax-flatten-reshape": lambda: graph_model(
        [
            helper.make_node("Softmax", ["X"], ["s"], axis=-1),
            helper.make_node("ArgMax", ["X"], ["i"], axis=1, keepdims=1),
            helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", ["s"], ["fl"], axis=1),
            helper.make_node("Reshape", ["fl", "shape"], ["rs"]),
            helper.make_node("Concat", ["rs", "fi"], ["Y"], axis=1),
        ],
        5,
        [const("shape", [-1, 4], np.int64)],
    ),
    "gemm-transb-alpha-beta": lambda: graph_model(
        [
            helper.make_node("Gemm", ["X", "B", "C"], ["Y"], transB=1, alpha=0.5, beta=2.0),
        ],
        3,
        [const("B", RNG.normal(size=(3, 4))), const("C", [0.1, -0.2, 0.3])],
    ),
    "matmul-min-max-identity": lambda: graph_model(
        [
            helper.make_node("MatMul", ["X", "W"], ["m"]),
            helper.make_node("Identity", ["m"], ["i"]),
            helper.make_node("Min", ["i", "lo"], ["a"]),
            helper.make_node("Max", ["a", "hi"], ["Y"]),
        ],
        2,
        [const("W", RNG.normal(size=(4, 2))), const("lo", 1.0), const("hi", -1.0)],
    ),
    "logic-equal-and-or-xor-not": lambda: graph_model(
        [
            helper.make_node("Equal", ["X", "one"], ["e"]),
            helper.make_node("Greater", ["X", "zero"], ["g"]),
            helper.make_node("And", ["e", "g"], ["a"]),
            helper.make_node("Or", ["e", "g"], ["o"]),
            helper.make_node("Xor", ["a", "o"], ["x"]),
            helper.make_node("Not", ["x"], ["n"]),
            helper.make_node("Cast", ["n"], ["Y"], to=TensorProto.FLOAT),
        ],
        4,
        [const("one", 1.0), const("zero", 0.0)],
    ),
    "squeeze-unsqueeze-feature-extractor": lambda: graph_model(
        [
            helper.make_node("ArrayFeatureExtractor", ["X", "cols"], ["c"], domain=ML),
            helper.make_node("ArrayFeatureExtractor", ["X", "one"], ["single"], domain=ML),
            helper.make_node("Squeeze", ["single", "ax"], ["sq"]),
            helper.make_node("Unsqueeze", ["sq", "ax"], ["us"]),
            helper.make_node("Concat", ["c", "us"], ["Y"], axis=1),
        ],
        3,
        [const("cols", [2, 0], np.int64), const("one", [1], np.int64), const("ax", [1], np.int64)],
    ),
    "scaler-binarizer": lambda: graph_model(
        [
            helper.make_node(
                "Scaler",
                ["X"],
                ["s"],
                domain=ML,
                offset=[0.5, 0, -1, 2],
                scale=[2.0, 1.0, 0.5, 3.0],
            ),
            helper.make_node("Binarizer", ["s"], ["Y"], domain=ML, threshold=0.25),
        ],
        4,
    ),
    "normalizers": lambda: graph_model(
        [
            helper.make_node("Normalizer", ["X"], ["a"], domain=ML, norm="MAX"),
            helper.make_node("Normalizer", ["X"], ["b"], domain=ML, norm="L1"),
            helper.make_node("Normalizer", ["X"], ["c"], domain=ML, norm="L2"),
            helper.make_node("Concat", ["a", "b", "c"], ["Y"], axis=1),
        ],
        12,
    ),
    "ge-le-reciprocal": lambda: graph_model(
        [
            helper.make_node("GreaterOrEqual", ["X", "one"], ["ge"]),
            helper.make_node("LessOrEqual", ["X", "zero"], ["le"]),
            helper.make_node("Cast", ["ge"], ["gef"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["le"], ["lef"], to=TensorProto.FLOAT),
            helper.make_node("Reciprocal", ["X"], ["r"]),
            helper.make_node("Concat", ["gef", "lef", "r"], ["Y"], axis=1),
        ],
        12,
        [const("one", 1.0), const("zero", 0.0)],
    ),
    "gather-columns": lambda: graph_model(
        [
            helper.make_node("Gather", ["X", "idx"], ["Y"], axis=1),
        ],
        3,
        [const("idx", [3, 0, -1], np.int64)],
    ),
    "label-encoder-one-hot": lambda: graph_model(
        [
            helper.make_node("Floor", ["X"], ["f"]),
            helper.make_node(
                "LabelEncoder",
                ["f"],
                ["codes"],
                domain=ML,
                keys_floats=[-1.0, 0.0, 1.0, 2.0],
                values_floats=[10.0, 20.0, 30.0, 2.0],
                default_float=-5.0,
            ),
            helper.make_node("Cast", ["f"], ["fi"], to=TensorProto.INT64),
            helper.make_node(
                "OneHotEncoder", ["fi"], ["oh"], domain=ML, cats_int64s=[-1, 0, 1], zeros=1
            ),
            helper.make_node("Reshape", ["oh", "shape"], ["ohr"]),
            helper.make_node("Concat", ["codes", "ohr"], ["Y"], axis=1),
        ],
        16,
        [const("shape", [-1, 12], np.int64)],
    ),
    "sum-reduce-argmin-lookup": lambda: graph_model(
        [
            helper.make_node("Sum", ["X", "X", "c"], ["s"]),
            helper.make_node("ReduceSum", ["X", "ax"], ["rs"], keepdims=1),
            helper.make_node("ReduceMean", ["X"], ["rm"], axes=[1], keepdims=1),
            helper.make_node("ReduceMax", ["X"], ["rx"], axes=[1], keepdims=1),
            helper.make_node("ReduceMin", ["X"], ["rn"], axes=[1], keepdims=1),
            helper.make_node("Max", ["X", "c", "lo"], ["mx"]),
            helper.make_node("ArgMin", ["X"], ["i"], axis=1, keepdims=1),
            helper.make_node("ArrayFeatureExtractor", ["table", "i"], ["t"], domain=ML),
            helper.make_node("Reshape", ["t", "column"], ["y"]),
            helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
            helper.make_node(
                "Concat", ["s", "rs", "rm", "rx", "rn", "mx", "fi", "y"], ["Y"], axis=1
            ),
        ],
        15,
        [
            const("c", [0.5, -1.0, 2.0, 0.0]),
            const("ax", [1], np.int64),
            const("lo", 0.25),
            const("table", [0.125, 0.5, 0.75, 0.875]),
            const("column", [-1, 1], np.int64),
        ],
        opset=13,
    ),
    "one-hot-blocks-joined-on-the-last-axis": lambda: graph_model(
        [
            helper.make_node("Floor", ["X"], ["f"]),
            helper.make_node("Cast", ["f"], ["fi"], to=TensorProto.INT64),
            helper.make_node("Gather", ["fi", "first"], ["a"], axis=1),
            helper.make_node("Gather", ["fi", "rest"], ["b"], axis=1),
            helper.make_node("OneHotEncoder", ["a"], ["oa"], domain=ML, cats_int64s=[-1, 0, 1]),
            helper.make_node("OneHotEncoder", ["b"], ["ob"], domain=ML, cats_int64s=[0, 1]),
            helper.make_node("Concat", ["oa", "ob"], ["o"], axis=-1),
            helper.make_node("Reshape", ["o", "shape"], ["Y"]),
        ],
        5,
        [
            const("first", [0], np.int64),
            const("rest", [2], np.int64),
            const("shape", [-1, 5], np.int64),
        ],
    ),
    "constant-folding": lambda: graph_model(
        [
            helper.make_node("Constant", [], ["k"], value=const("kv", [3.0, 1.0, 4.0, 1.0])),
            helper.make_node("Mul", ["k", "two"], ["k2"]),
            helper.make_node("Add", ["X", "k2"], ["Y"]),
        ],
        4,
        [const("two", 2.0)],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_operator_parity(case: str) -> None:
    model = CASES[case]()
    ours, _ = run_compiled(model, X)
    (reference,) = run_onnxruntime(model, X)
    np.testing.assert_allclose(ours, reference.reshape(ours.shape), rtol=1e-6, atol=1e-6)


def test_imputer_replaces_nan() -> None:
    model = graph_model(
        [
            helper.make_node(
                "Imputer",
                ["X"],
                ["Y"],
                domain=ML,
                imputed_value_floats=[9.0, 8.0, 7.0, 6.0],
                replaced_value_float=np.nan,
            ),
        ],
        4,
    )
    x = X.copy()
    x[::3, 1] = np.nan
    ours, _ = run_compiled(model, x)
    (reference,) = run_onnxruntime(model, x)
    np.testing.assert_array_equal(ours, reference)


def _tree_regressor(modes: list[str], missing: list[int], aggregate: str) -> onnx.ModelProto:
    # Two trees of three nodes: root branch on a feature, two leaves.
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["X"],
        ["Y"],
        domain=ML,
        nodes_treeids=[0, 0, 0, 1, 1, 1],
        nodes_nodeids=[0, 1, 2, 0, 1, 2],
        nodes_featureids=[1, 0, 0, 2, 0, 0],
        nodes_values=[0.0, 0, 0, -1.0, 0, 0],
        nodes_modes=[modes[0], "LEAF", "LEAF", modes[1], "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0, 1, 0, 0],
        nodes_falsenodeids=[2, 0, 0, 2, 0, 0],
        nodes_missing_value_tracks_true=[missing[0], 0, 0, missing[1], 0, 0],
        target_treeids=[0, 0, 1, 1],
        target_nodeids=[1, 2, 1, 2],
        target_ids=[0, 0, 0, 0],
        target_weights=[1.5, -2.0, 0.25, 4.0],
        n_targets=1,
        aggregate_function=aggregate,
        base_values=[0.5],
    )
    return graph_model([node], 1, opset=17)


@pytest.fixture(params=["unrolled", "table"])
def tree_layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a tree test with each kernel layout (the table walk forced by a zero bound)."""
    if request.param == "table":
        monkeypatch.setattr(trees, "UNROLL_MAX_NODES", 0)
    return str(request.param)


@pytest.mark.parametrize(
    ("modes", "missing", "aggregate"),
    [
        (["BRANCH_LEQ", "BRANCH_LEQ"], [0, 0], "SUM"),
        (["BRANCH_LT", "BRANCH_GTE"], [1, 0], "AVERAGE"),
        (["BRANCH_GT", "BRANCH_EQ"], [0, 1], "MIN"),
        (["BRANCH_NEQ", "BRANCH_GT"], [1, 1], "MAX"),
    ],
)
def test_tree_modes_missing_values_and_aggregates(
    modes: list[str], missing: list[int], aggregate: str, tree_layout: str
) -> None:
    x = X.copy()
    x[::4, 1] = np.nan
    x[1::4, 2] = np.nan
    x[7, 2] = -1.0  # exactly the threshold (EQ/NEQ/GT/GTE differ here)
    model = _tree_regressor(modes, missing, aggregate)
    ours, _ = run_compiled(model, x)
    (reference,) = run_onnxruntime(model, x)
    np.testing.assert_allclose(ours, reference, rtol=1e-6)


@pytest.mark.parametrize("weights", [[0.9, 0.2], [0.9, -0.7]], ids=["all-positive", "mixed"])
@pytest.mark.parametrize("post", ["NONE", "LOGISTIC"])
def test_binary_tree_classifier_conventions(
    weights: list[float], post: str, tree_layout: str
) -> None:
    node = helper.make_node(
        "TreeEnsembleClassifier",
        ["X"],
        ["label", "probabilities"],
        domain=ML,
        nodes_treeids=[0, 0, 0],
        nodes_nodeids=[0, 1, 2],
        nodes_featureids=[0, 0, 0],
        nodes_values=[0.0, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=[2, 0, 0],
        class_treeids=[0, 0],
        class_nodeids=[1, 2],
        class_ids=[0, 0],
        class_weights=weights,
        classlabels_int64s=[0, 1],
        post_transform=post,
        base_values=[0.1],
    )
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
    ]
    model = graph_model([node], 2, outputs=outputs)
    ours, classes = run_compiled(model, X)
    label, probabilities = run_onnxruntime(model, X)
    assert (ours[:, 0] != label_indices(label, classes)).sum() == 0
    np.testing.assert_allclose(ours[:, 1:], probabilities, atol=1e-6)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            helper.make_node("TopK", ["X", "k"], ["Y", "I"], name="top_k_1"),
            "unsupported operator ai.onnx:TopK .node 'top_k_1'.",
        ),
        (
            helper.make_node("Softmax", ["X"], ["Y"], axis=0, name="sm"),
            "Softmax node 'sm': only axis 1",
        ),
        (
            helper.make_node("Gemm", ["X", "B"], ["Y"], transA=1, name="g"),
            "Gemm node 'g': transA=1",
        ),
    ],
)
def test_unsupported_operators_raise_compile_error_naming_op_and_node(
    node: Node, message: str
) -> None:
    graph = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in node.output],
        initializer=[const("k", [1], np.int64), const("B", np.ones((4, 4)))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CompileError, match=message):
        run_compiled(model, X)


def test_double_input_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "t",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [None, 4])],
    )
    with pytest.raises(CompileError, match="float32"):
        run_compiled(helper.make_model(graph), X)


def test_a_cyclic_tree_is_refused() -> None:
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["X"],
        ["Y"],
        domain=ML,
        name="loop",
        nodes_treeids=[0, 0, 0],
        nodes_nodeids=[0, 1, 2],
        nodes_featureids=[0, 1, 0],
        nodes_values=[0.0, 0.0, 0.0],
        nodes_modes=["BRANCH_LEQ", "BRANCH_LEQ", "LEAF"],
        nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=[2, 2, 0],
        target_treeids=[0],
        target_nodeids=[2],
        target_ids=[0],
        target_weights=[1.0],
        n_targets=1,
    )
    graph = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 3)]
    )
    with pytest.raises(CompileError, match=r"TreeEnsembleRegressor node 'loop': .*reachable twice"):
        run_compiled(model, X)


def test_a_very_wide_model_gets_a_smaller_batch() -> None:
    from agent.compiler.build import compile_onnx
    from agent.limits import Limits
    from agent.runtime.model import WasmModel

    width = 20_000
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "wide",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        initializer=[const("W", np.full((width, 1), 0.5))],
    )
    compiled = compile_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model = WasmModel.load(compiled.wasm, limits=Limits())
    assert model.max_batch < 1024
    assert model.predict([[1.0] * width] * 3) == [[width * 0.5]] * 3


EXTREMES = np.array(
    [
        [-np.inf, -1000.0, -88.5, -20.0],
        [-1e-30, 0.0, 1e-30, 0.75],
        [20.0, 88.5, 1000.0, np.inf],
        [np.nan, -0.0, 1e-7, -3.0],
    ],
    np.float32,
)


@pytest.mark.parametrize("op", ["Exp", "Log", "Sigmoid", "Tanh", "Sqrt", "Relu", "Floor"])
def test_math_on_extreme_inputs(op: str) -> None:
    model = graph_model([helper.make_node(op, ["X"], ["Y"])], 4)
    ours, _ = run_compiled(model, EXTREMES)
    (reference,) = run_onnxruntime(model, EXTREMES)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6, equal_nan=True)
