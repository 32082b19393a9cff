"""Support vector machines of ai.onnx.ml: SVMClassifier (with Platt probabilities, as
``SVC(probability=True)`` converts) and SVMRegressor (``SVR``, ``NuSVR``).

Per row, following ONNX Runtime's kernels in f32:

1. the kernel of the row with every support vector (LINEAR ``x.v``, POLY
   ``(gamma x.v + coef0)^degree``, RBF ``exp(-gamma |x-v|^2)``, SIGMOID
   ``tanh(gamma x.v + coef0)``), summed feature by feature like ONNX Runtime;
2. the one-vs-one decision of each class pair ``rho + sum coef * kernel`` (a dense layer
   whose weight matrix is built here from the per-class coefficient blocks) and a vote;
   the label is the class with the most votes, first on ties, as in libsvm;
3. pairwise Platt probabilities ``1 / (1 + exp(A s + B))`` clamped to [1e-7, 1 - 1e-7],
   coupled into class probabilities by libsvm's iterative ``multiclass_probability``
   (at most max(100, k) rounds, stopping when every error is below 0.005 / k).

A classifier without probability estimates (``SVC()``, as ``CalibratedClassifierCV(SVC())``
holds it) writes onnxruntime's raw decisions: ``[-s, s]`` for two classes, else one per
class pair; these slots are marked so no signature publishes them as probabilities.

Refused: the liblinear layout without support vectors, one-class
regressors, non-integer polynomial degrees, post-transforms, and more than
``MAX_CLASSES`` classes (the coupling is unrolled per class pair).
"""

from __future__ import annotations

import numpy as np
import onnx

from agent.compiler.graph import ML_DOMAIN, Attrs, LowerFn, Lowering
from agent.compiler.ir import CELL, DType, Value, f64_literal, fail
from agent.compiler.scores import class_labels
from agent.compiler.vectors import ARGMAX_LOCALS, argmax_body

MAX_CLASSES = 16
_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


def _decisions(
    state: Lowering,
    node: onnx.NodeProto,
    attrs: Attrs,
    x: Value,
    weights: np.ndarray,
    bias: np.ndarray,
) -> tuple[int, str]:
    """WAT computing ``bias + weights @ kernels`` into f64 cells, and their address.

    ``kernels`` are the kernel of the row with each support vector (``weights`` has one
    column per vector), held in f64 scratch cells. Everything is f64 from the f32 row and
    the f32 attributes on, as libsvm computes (scikit-learn's own figures), which ONNX
    Runtime's f32 kernels also approach within ~5e-7."""
    kind = str(attrs.get("kernel_type", "LINEAR"))
    if kind not in _KERNELS:
        raise fail(node.op_type, node.name, f"kernel {kind!r}")
    params = [float(p) for p in attrs.get("kernel_params", [])]
    gamma, coef0, degree = [*params, 0.0, 0.0, 0.0][:3]
    if kind == "POLY" and (degree != int(degree) or not 0 <= degree <= 16):
        raise fail(node.op_type, node.name, "polynomial degree must be a whole number <= 16")
    n_out, n_vectors = weights.shape
    vectors = np.asarray(attrs.get("support_vectors", []), dtype=np.float32)
    if vectors.size != n_vectors * x.width:
        raise fail(node.op_type, node.name, "support vectors do not match the input width")
    program = state.program
    table = program.add_f32(vectors)
    # f32 attributes, widened exactly: the graph's values, summed in f64
    weight_table = program.add_data(weights.astype(np.float32).astype("<f8").tobytes())
    kernels = program.alloc(8 * n_vectors)
    decisions = program.alloc(8 * n_out)
    feature = f"(f64.promote_f32 (f32.load offset={x.addr} (local.get $f)))"
    vector = "(f64.promote_f32 (f32.load (local.get $p)))"
    if kind == "RBF":
        step = (
            f"(local.set $d (f64.sub {feature} {vector}))\n"
            "(local.set $s (f64.add (local.get $s) (f64.mul (local.get $d) (local.get $d))))"
        )
    else:
        step = f"(local.set $s (f64.add (local.get $s) (f64.mul {feature} {vector})))"

    def f64(v: float) -> str:
        return f"(f64.const {f64_literal(float(np.float32(v)))})"

    s = "(local.get $s)"
    affine = f"(f64.add (f64.mul {s} {f64(gamma)}) {f64(coef0)})"
    prelude = ""
    if kind == "LINEAR":
        value = s
    elif kind == "RBF":
        program.helpers.add("exp")
        value = f"(call $exp (f64.mul (f64.neg {f64(gamma)}) {s}))"
    elif kind == "SIGMOID":
        program.helpers.add("tanh")
        value = f"(call $tanh {affine})"
    else:  # POLY: an integer power, as repeated products
        prelude = f"(local.set $d {affine})"
        value = "(f64.const 1)" if degree == 0 else "(local.get $d)"
        for _ in range(int(degree) - 1):
            value = f"(f64.mul {value} (local.get $d))"
    sums = []
    for e in range(n_out):
        sums.append(f"""(local.set $s {f64(float(bias[e]))})
(local.set $p (i32.const {weight_table + 8 * n_vectors * e}))
(local.set $j (i32.const 0))
(loop $terms
  (local.set $s (f64.add (local.get $s) (f64.mul (f64.load (local.get $p))
    (f64.load offset={kernels} (local.get $j)))))
  (local.set $p (i32.add (local.get $p) (i32.const 8)))
  (local.set $j (i32.add (local.get $j) (i32.const 8)))
  (br_if $terms (i32.lt_u (local.get $j) (i32.const {8 * n_vectors}))))
(f64.store (i32.const {decisions + 8 * e}) (local.get $s))""")
    body = f"""(local.set $p (i32.const {table}))
(local.set $j (i32.const 0))
(loop $vectors
  (local.set $s (f64.const 0))
  (local.set $f (i32.const 0))
  (loop $features
    {step}
    (local.set $p (i32.add (local.get $p) (i32.const {CELL})))
    (local.set $f (i32.add (local.get $f) (i32.const {CELL})))
    (br_if $features (i32.lt_u (local.get $f) (i32.const {x.width * CELL}))))
  {prelude}
  (f64.store offset={kernels} (local.get $j) {value})
  (local.set $j (i32.add (local.get $j) (i32.const 8)))
  (br_if $vectors (i32.lt_u (local.get $j) (i32.const {8 * n_vectors}))))
{chr(10).join(sums)}"""
    return decisions, body


_DECISION_LOCALS = "(local $p i32) (local $j i32) (local $f i32) (local $s f64) (local $d f64)"


def _row_input(state: Lowering, node: onnx.NodeProto) -> Value:
    x = state.value(node, 0)
    if x.rank != 2 or x.dtype is DType.string:
        raise fail(node.op_type, node.name, "input must be a numeric [N, k] row")
    return x


def _svm_classifier(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = _row_input(state, node)
    classes, strings = class_labels(node, dict(attrs))
    k = len(classes)
    per_class = [int(v) for v in attrs.get("vectors_per_class", [])]
    if not per_class or len(per_class) != k:
        raise fail(
            node.op_type, node.name, "only the libsvm layout (vectors_per_class) is supported"
        )
    if k > MAX_CLASSES:
        raise fail(node.op_type, node.name, f"more than {MAX_CLASSES} classes")
    prob_a = [float(v) for v in attrs.get("prob_a", [])]
    prob_b = [float(v) for v in attrs.get("prob_b", [])]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    has_proba = bool(prob_a or prob_b)
    if has_proba and (len(prob_a) != len(pairs) or len(prob_b) != len(pairs)):
        raise fail(node.op_type, node.name, "prob_a and prob_b need one value per class pair")
    if str(attrs.get("post_transform", "NONE")) != "NONE":
        raise fail(node.op_type, node.name, "only post_transform NONE is supported")
    n_vectors = sum(per_class)
    coefficients = np.asarray(attrs.get("coefficients", []), dtype=np.float64)
    rho = np.asarray(attrs.get("rho", []), dtype=np.float64)
    if coefficients.size != (k - 1) * n_vectors or rho.size != len(pairs):
        raise fail(node.op_type, node.name, "coefficients or rho do not match the classes")
    coefs = coefficients.reshape(k - 1, n_vectors)
    start = np.concatenate([[0], np.cumsum(per_class)])
    weights = np.zeros((len(pairs), n_vectors))
    for e, (i, j) in enumerate(pairs):
        weights[e, start[i] : start[i + 1]] = coefs[j - 1, start[i] : start[i + 1]]
        weights[e, start[j] : start[j + 1]] = coefs[i, start[j] : start[j + 1]]
    if not has_proba and k == 2 and coefficients.min() >= 0:
        # onnxruntime then labels every row class 1, whatever the decision
        raise fail(node.op_type, node.name, "binary SVM with only non-negative coefficients")
    decisions, compute = _decisions(state, node, attrs, x, weights, rho)
    label = state.new_value(node.output[0], 1, 1, DType.string if strings else DType.int, classes)
    votes = state.program.slot(k)
    body = [compute]
    body += [f"(f32.store (i32.const {votes + CELL * c}) (f32.const 0))" for c in range(k)]
    for e, (i, j) in enumerate(pairs):
        winner, loser = votes + CELL * i, votes + CELL * j
        body.append(
            f"(if (f64.gt (f64.load (i32.const {decisions + 8 * e})) (f64.const 0))"
            f" (then (f32.store (i32.const {winner}) (f32.add (f32.load (i32.const {winner}))"
            f" (f32.const 1))))"
            f" (else (f32.store (i32.const {loser}) (f32.add (f32.load (i32.const {loser}))"
            f" (f32.const 1)))))"
        )
    body.append(argmax_body(votes, k, label.addr))
    if has_proba:
        probabilities = state.new_value(node.output[1], k, 2, DType.float, classes)
        scratch = state.program.alloc(8 * (2 * k * k + 2 * k))
        body.append(_coupling(decisions, pairs, prob_a, prob_b, k, scratch, probabilities))
        state.program.helpers.add("exp")
    else:
        # Raw decisions, as onnxruntime writes them: [-s, s] for two classes, else one per
        # class pair. Marked so that no signature publishes them as probabilities.
        width = 2 if k == 2 else len(pairs)
        scores = state.new_value(node.output[1], width, 2)
        state.program.decision_scores.add(scores.addr)
        cells = [f"(f64.neg (f64.load (i32.const {decisions})))"] if k == 2 else []
        cells += [f"(f64.load (i32.const {decisions + 8 * e}))" for e in range(len(pairs))]
        body += [
            f"(f32.store (i32.const {scores.cell(c)}) (f32.demote_f64 {cell}))"
            for c, cell in enumerate(cells)
        ]
    locals_ = " ".join((_DECISION_LOCALS, ARGMAX_LOCALS, _COUPLING_LOCALS))
    state.add_kernel(node, "\n".join(body), locals_)


_COUPLING_LOCALS = "(local $it i32) (local $pqp f64) (local $err f64) (local $diff f64)"


def _coupling(
    decisions: int,
    pairs: list[tuple[int, int]],
    prob_a: list[float],
    prob_b: list[float],
    k: int,
    scratch: int,
    out: Value,
) -> str:
    """libsvm's ``multiclass_probability``, in f64 like libsvm, unrolled over the ``k``
    classes: pairwise probabilities ``R``, the matrix ``Q``, then rounds of the
    fixed-point update of ``P`` until the largest error is below 0.005 / k. ``scratch`` is
    the address of ``2 k^2 + 2 k`` f64 cells."""
    r = scratch
    q = r + 8 * k * k
    qp = q + 8 * k * k
    p = qp + 8 * k

    def cell(base: int, i: int, j: int | None = None) -> int:
        return base + 8 * (i if j is None else i * k + j)

    def ld(addr: int) -> str:
        return f"(f64.load (i32.const {addr}))"

    def st(addr: int, expr: str) -> str:
        return f"(f64.store (i32.const {addr}) {expr})"

    def const(v: float) -> str:
        return f"(f64.const {f64_literal(v)})"

    lines = []
    for e, (i, j) in enumerate(pairs):
        score = f"(f64.load (i32.const {decisions + 8 * e}))"
        v = f"(f64.add (f64.mul {score} {const(prob_a[e])}) {const(prob_b[e])})"
        # 1 - logistic(v) = 1 / (1 + exp(v)), libsvm's sigmoid_predict
        platt = f"(f64.div {const(1.0)} (f64.add {const(1.0)} (call $exp {v})))"
        clamped = f"(f64.min (f64.max {platt} {const(1e-7)}) {const(1 - 1e-7)})"
        lines.append(st(cell(r, i, j), clamped))
        lines.append(st(cell(r, j, i), f"(f64.sub {const(1.0)} {ld(cell(r, i, j))})"))
    for t in range(k):
        lines.append(st(cell(p, t), const(1.0 / k)))
        total = const(0.0)
        for j in range(k):
            if j != t:
                total = f"(f64.add {total} (f64.mul {ld(cell(r, j, t))} {ld(cell(r, j, t))}))"
        lines.append(st(cell(q, t, t), total))
        for j in range(t):
            lines.append(st(cell(q, t, j), ld(cell(q, j, t))))
        for j in range(t + 1, k):
            lines.append(
                st(cell(q, t, j), f"(f64.neg (f64.mul {ld(cell(r, j, t))} {ld(cell(r, t, j))}))")
            )
    rounds = []
    for t in range(k):
        total = const(0.0)
        for j in range(k):
            total = f"(f64.add {total} (f64.mul {ld(cell(q, t, j))} {ld(cell(p, j))}))"
        rounds.append(st(cell(qp, t), total))
    rounds.append(f"(local.set $pqp {const(0.0)})")
    rounds += [
        f"(local.set $pqp (f64.add (local.get $pqp) (f64.mul {ld(cell(p, t))} {ld(cell(qp, t))})))"
        for t in range(k)
    ]
    rounds.append(f"(local.set $err {const(0.0)})")
    rounds += [
        f"(local.set $err (f64.max (local.get $err) "
        f"(f64.abs (f64.sub {ld(cell(qp, t))} (local.get $pqp)))))"
        for t in range(k)
    ]
    rounds.append(f"(br_if $done (f64.lt (local.get $err) {const(0.005 / k)}))")
    one_plus = f"(f64.add {const(1.0)} (local.get $diff))"
    for t in range(k):
        qtt = ld(cell(q, t, t))
        rounds.append(
            f"(local.set $diff (f64.div (f64.add (f64.neg {ld(cell(qp, t))}) (local.get $pqp)) "
            f"{qtt}))"
        )
        rounds.append(st(cell(p, t), f"(f64.add {ld(cell(p, t))} (local.get $diff))"))
        rounds.append(
            f"(local.set $pqp (f64.div (f64.div (f64.add (local.get $pqp) (f64.mul "
            f"(local.get $diff) (f64.add (f64.mul (local.get $diff) {qtt}) (f64.mul "
            f"{const(2.0)} {ld(cell(qp, t))})))) {one_plus}) {one_plus}))"
        )
        for j in range(k):
            rounds.append(
                st(
                    cell(qp, j),
                    f"(f64.div (f64.add {ld(cell(qp, j))} (f64.mul (local.get $diff) "
                    f"{ld(cell(q, t, j))})) {one_plus})",
                )
            )
            rounds.append(st(cell(p, j), f"(f64.div {ld(cell(p, j))} {one_plus})"))
    lines.append(f"""(local.set $it (i32.const 0))
(block $done (loop $rounds
{chr(10).join(rounds)}
(local.set $it (i32.add (local.get $it) (i32.const 1)))
(br_if $rounds (i32.lt_u (local.get $it) (i32.const {max(100, k)})))))""")
    lines += [
        f"(f32.store (i32.const {out.cell(t)}) (f32.demote_f64 {ld(cell(p, t))}))" for t in range(k)
    ]
    return "\n".join(lines)


def _svm_regressor(state: Lowering, node: onnx.NodeProto, attrs: Attrs) -> None:
    x = _row_input(state, node)
    n_vectors = int(attrs.get("n_supports", 0))
    if n_vectors <= 0:
        raise fail(node.op_type, node.name, "only the libsvm layout (n_supports > 0) is supported")
    if int(attrs.get("one_class", 0)):
        raise fail(node.op_type, node.name, "one-class SVMs are not supported")
    if str(attrs.get("post_transform", "NONE")) != "NONE":
        raise fail(node.op_type, node.name, "only post_transform NONE is supported")
    coefficients = np.asarray(attrs.get("coefficients", []), dtype=np.float64)
    rho = np.asarray(attrs.get("rho", []), dtype=np.float64)
    if coefficients.size != n_vectors or rho.size != 1:
        raise fail(node.op_type, node.name, "coefficients or rho do not match the vectors")
    decisions, compute = _decisions(state, node, attrs, x, coefficients.reshape(1, n_vectors), rho)
    out = state.new_value(node.output[0], 1, 2)
    store = (
        f"(f32.store (i32.const {out.addr}) (f32.demote_f64 (f64.load (i32.const {decisions}))))"
    )
    state.add_kernel(node, f"{compute}\n{store}", _DECISION_LOCALS)


LOWERINGS: dict[tuple[str, str], LowerFn] = {
    (ML_DOMAIN, "SVMClassifier"): _svm_classifier,
    (ML_DOMAIN, "SVMRegressor"): _svm_regressor,
}
