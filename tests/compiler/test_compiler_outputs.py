"""Output declarations for hand-made and PyTorch-style ONNX graphs (issue 17): the builder
says which graph output is a probability (of which classes), a class index or a score,
from Python (``outputs=``) or the CLI (``--outputs``), instead of ``value_<i>`` scores."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression

from agent.bundle.manifest import BundleManifest, OutputKind
from agent.cli import bundle_build_cmd
from agent.compiler.build import build
from agent.errors import CompileError
from agent.limits import Limits
from agent.runtime.model import WasmModel
from tests.compiler.compiler_helpers import run_onnxruntime

X = np.random.default_rng(11).normal(size=(120, 4)).astype(np.float32)


def _torch_like_model() -> onnx.ModelProto:
    """What torch.onnx.export writes for a two-headed MLP: logits -> Softmax, a severity
    score from a second head, and the arg max as a float class index."""
    weights = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(weights.normal(size=(4, 2)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array([0.1, -0.1], np.float32), "b"),
        numpy_helper.from_array(weights.normal(size=(4, 1)).astype(np.float32), "V"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("MatMul", ["input", "V"], ["severity"]),
        helper.make_node("ArgMax", ["logits"], ["index"], axis=1, keepdims=1),
        helper.make_node("Cast", ["index"], ["label"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "torch_jit",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("severity", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("label", TensorProto.FLOAT, [None, 1]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "model.onnx"
    onnx.save(_torch_like_model(), str(path))
    reference = tmp_path / "reference.csv"
    np.savetxt(reference, X, delimiter=",", header="a,b,c,d", comments="", fmt="%.9g")
    return path, reference


DECLARED = ["probability:classes=no,yes", "score:names=severity", "class:classes=no,yes"]


def _check(out: Path) -> None:
    manifest = BundleManifest.model_validate_json((out / "manifest.json").read_bytes())
    assert [(o.name, o.kind, o.class_label) for o in manifest.outputs] == [
        ("probability_no", OutputKind.probability, "no"),
        ("probability_yes", OutputKind.probability, "yes"),
        ("severity", OutputKind.score, None),
        ("label", OutputKind.label, None),
    ]
    assert manifest.outputs[3].classes == ["no", "yes"]
    assert set(manifest.reference.outputs["label"].category_frequencies) == {"no", "yes"}
    ours = np.asarray(
        WasmModel.load((out / "model.wasm").read_bytes(), limits=Limits()).predict(X.tolist())
    )
    probs, severity, label = run_onnxruntime(_torch_like_model(), X)
    assert np.abs(ours[:, :2] - probs).max() <= 1e-6
    assert np.abs(ours[:, 2] - severity[:, 0]).max() <= 1e-5
    assert (ours[:, 3] != label[:, 0]).sum() == 0


def test_declared_outputs_from_python(files: tuple[Path, Path], tmp_path: Path) -> None:
    model, reference = files
    _check(
        build(
            model,
            reference=reference,
            name="m",
            version="1.0.0",
            out=tmp_path / "o",
            outputs=DECLARED,
        )
    )


def test_declared_outputs_from_the_command_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    model, reference = files
    parser = argparse.ArgumentParser()
    bundle_build_cmd.register(parser.add_subparsers(required=True))
    argv = [
        "build",
        str(model),
        "--reference",
        str(reference),
        "--name",
        "m",
        "--version",
        "1.0.0",
        "-o",
        str(tmp_path / "o"),
    ]
    for declaration in DECLARED:
        argv += ["--outputs", declaration]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    _check(tmp_path / "o")


def test_undeclared_outputs_of_a_hand_made_graph_are_scores(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    model, reference = files
    with pytest.raises(CompileError, match="unsupported output signature"):
        build(model, reference=reference, name="m", version="1.0.0", out=tmp_path / "o")


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (
            ["probability:classes=a,b,c", "score", "class:classes=a,b"],
            r"graph output 'probs' has 2 columns, its declaration probability names 3",
        ),
        (["probability:classes=no,yes", "score"], r"2 output declarations for a graph with 3"),
        (["chance:classes=no,yes", "score", "score"], r"the kind must be one of"),
        (["probability", "score", "score"], r"probability needs classes="),
        (["probability:classes=no,yes;colour=red", "score", "score"], r"expected classes="),
        (
            ["probability:classes=no,yes", "score:names=p_no", "class:classes=no,yes;names=p_no"],
            r"declared output names collide",
        ),
    ],
)
def test_bad_declarations_are_refused_naming_the_problem(
    files: tuple[Path, Path], tmp_path: Path, outputs: list[str], message: str
) -> None:
    model, reference = files
    with pytest.raises(CompileError, match=message):
        build(
            model,
            reference=reference,
            name="m",
            version="1.0.0",
            out=tmp_path / "o",
            outputs=outputs,
        )
    assert not (tmp_path / "o").exists()


def test_estimators_declare_their_own_outputs(files: tuple[Path, Path], tmp_path: Path) -> None:
    _, reference = files
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    with pytest.raises(CompileError, match="declared only for ONNX models"):
        build(
            model,
            reference=reference,
            name="m",
            version="1.0.0",
            out=tmp_path / "o",
            outputs=["score"],
        )
