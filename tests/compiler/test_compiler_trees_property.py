"""Random tree ensembles (shapes, comparison modes, missing-value routing, NaN and
infinite inputs) against onnxruntime, with both kernel layouts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from agent.compiler import trees
from tests.compiler.compiler_helpers import run_compiled, run_onnxruntime

MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]
N_FEATURES = 3
THRESHOLDS = [-1.0, 0.0, 0.5, 2.0]


@st.composite
def forests(draw: st.DrawFn) -> onnx.ModelProto:
    columns: dict[str, list[object]] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    n_targets = draw(st.integers(1, 2))
    for tree in range(draw(st.integers(1, 4))):
        counter = [0]

        def grow(depth: int, tree: int = tree, counter: list[int] = counter) -> int:
            nid = counter[0]
            counter[0] += 1
            position = len(columns["nodes_nodeids"])
            for key in (
                "nodes_treeids",
                "nodes_nodeids",
                "nodes_featureids",
                "nodes_values",
                "nodes_modes",
                "nodes_truenodeids",
                "nodes_falsenodeids",
                "nodes_missing_value_tracks_true",
            ):
                columns[key].append(0)
            columns["nodes_treeids"][position] = tree
            columns["nodes_nodeids"][position] = nid
            if depth == 0 or (draw(st.booleans()) and depth < 3):
                columns["nodes_modes"][position] = "LEAF"
                for target in range(n_targets):
                    columns["target_treeids"].append(tree)
                    columns["target_nodeids"].append(nid)
                    columns["target_ids"].append(target)
                    columns["target_weights"].append(draw(st.sampled_from([-1.5, 0.25, 3.0])))
                return nid
            columns["nodes_modes"][position] = draw(st.sampled_from(MODES))
            columns["nodes_featureids"][position] = draw(st.integers(0, N_FEATURES - 1))
            columns["nodes_values"][position] = draw(st.sampled_from(THRESHOLDS))
            columns["nodes_missing_value_tracks_true"][position] = int(draw(st.booleans()))
            columns["nodes_truenodeids"][position] = grow(depth - 1)
            columns["nodes_falsenodeids"][position] = grow(depth - 1)
            return nid

        grow(3)
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["X"],
        ["Y"],
        domain="ai.onnx.ml",
        n_targets=n_targets,
        aggregate_function=draw(st.sampled_from(["SUM", "AVERAGE", "MIN", "MAX"])),
        base_values=[0.5] * n_targets,
        **columns,
    )
    graph = helper.make_graph(
        [node],
        "forest",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n_targets])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    return model


# Inputs sit on, around and far from the thresholds, with NaN and infinities.
VALUES = [-np.inf, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 7.0, np.inf, np.nan]
GRID = np.array(np.meshgrid(VALUES, VALUES, VALUES)).reshape(3, -1).T.astype(np.float32)


@pytest.mark.parametrize("layout", ["unrolled", "table"])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(model=forests())
def test_random_forests_match_onnxruntime(
    model: onnx.ModelProto, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trees, "UNROLL_MAX_NODES", 20_000 if layout == "unrolled" else 0)
    ours, _ = run_compiled(model, GRID)
    (reference,) = run_onnxruntime(model, GRID)
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)
