"""Per-feature contributions: how much each feature moved one patient's output, exactly,
in pure Python (no numpy on a hospital server), from a bundle's ``explain.json``.

For a tree ensemble these are the exact Shapley values of the trees' path-dependent
expectation (TreeSHAP, Lundberg et al. 2018, "Consistent individualized feature attribution
for tree ensembles", algorithm 2, as the ``shap`` package's C++ ``tree_shap`` implements it);
for a linear model ``coefficient * (x - reference mean)``. Either way the base value (the
expected output over the training reference) plus the contributions is the model's output
in the explained space: log-odds for a classifier whose output is a logistic of a margin,
else the output itself. That identity is checked on the reference rows when a bundle is
built, and by the tests against scikit-learn and ``shap``.

A split sees the value the module sees: the feature as float32, compared ``<=`` with the
threshold; a missing value (NaN) follows the node's learnt missing direction.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

from agent.bundle.explain import (
    EXPLAIN_FILE,
    ExplainDocument,
    LinearModel,
    TreeModel,
    TreeNodes,
    parse_explain,
)
from agent.bundle.manifest import BundleManifest
from agent.limits import Limits
from agent.types import Contributions

NOT_AVAILABLE = (
    "this model has no contribution data: contributions are computed for tree ensembles "
    "and linear models with one risk output, built from the estimator (docs/explain.md)"
)


class Explainer:
    """Contributions for one bundle; built once per loaded bundle, then read-only."""

    def __init__(self, document: ExplainDocument, features: Sequence[str]) -> None:
        self.document = document
        self.features = tuple(features)
        model = document.model
        if isinstance(model, LinearModel):
            self.base = model.intercept + math.fsum(
                c * m for c, m in zip(model.coefficients, model.means, strict=True)
            )
        else:
            self.base = model.offset + math.fsum(_expected(t) for t in model.trees)

    def contributions(self, row: Sequence[float]) -> Contributions:
        """``row`` (floats in manifest input order, NaN for missing) explained."""
        model = self.document.model
        if isinstance(model, LinearModel):
            values = [
                c * (x - m) for c, x, m in zip(model.coefficients, row, model.means, strict=True)
            ]
        else:
            values = _tree_contributions(model, [_float32(x) for x in row])
        return Contributions(
            output=self.document.output,
            space=self.document.space,
            base=self.base,
            values=tuple(zip(self.features, values, strict=True)),
        )


def unavailable(detail: str = NOT_AVAILABLE) -> Contributions:
    """The answer for a model without contribution data: says so, with why."""
    return Contributions(unavailable=detail)


def load_explainer(
    files: Mapping[str, bytes], manifest: BundleManifest, limits: Limits
) -> Explainer | None:
    """The explainer of a bundle's ``explain.json`` (already checked against the manifest's
    SHA-256 by whoever read ``files``), None when the bundle has none; ``BundleError``
    when it is invalid."""
    data = files.get(EXPLAIN_FILE)
    if data is None:
        return None
    return Explainer(parse_explain(data, manifest, limits), manifest.feature_names())


def logistic(margin: float) -> float:
    """The output a log-odds ``margin`` stands for, without overflow at either end."""
    if margin >= 0:
        return 1.0 / (1.0 + math.exp(-margin))
    odds = math.exp(margin)
    return odds / (1.0 + odds)


def _float32(value: float) -> float:
    """``value`` rounded to float32, as the module reads its input row."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def _expected(tree: TreeNodes) -> float:
    """The tree's expected output over its training rows: leaf values weighted by cover,
    folded bottom up (children come after their parent)."""
    means = list(tree.value)
    for node in range(len(means) - 1, -1, -1):
        left, right = tree.left[node], tree.right[node]
        if left != -1:
            weights = tree.cover[left] + tree.cover[right]
            means[node] = (tree.cover[left] * means[left] + tree.cover[right] * means[right]) / (
                weights
            )
    return means[0]


def _tree_contributions(model: TreeModel, row: Sequence[float]) -> list[float]:
    phi = [0.0] * len(row)
    for tree in model.trees:
        _tree_shap(tree, row, phi)
    return phi


# A path element: [feature, zero fraction, one fraction, permutation weight].
_Path = list[list[float]]


def _tree_shap(tree: TreeNodes, row: Sequence[float], phi: list[float]) -> None:
    """Add one tree's exact Shapley values for ``row`` to ``phi``."""

    def recurse(node: int, parent: _Path, zero: float, one: float, feature: int) -> None:
        path = [element[:] for element in parent]
        _extend(path, zero, one, feature)
        left, right = tree.left[node], tree.right[node]
        if left == -1:
            value = tree.value[node]
            for i in range(1, len(path)):
                element = path[i]
                weight = _unwound_sum(path, i)
                phi[int(element[0])] += weight * (element[2] - element[1]) * value
            return
        split = tree.feature[node]
        x = row[split]
        goes_left = tree.missing_left[node] if math.isnan(x) else x <= tree.threshold[node]
        hot, cold = (left, right) if goes_left else (right, left)
        incoming_zero = incoming_one = 1.0
        for k in range(1, len(path)):
            if int(path[k][0]) == split:  # split on before: undo it, then redo it here
                incoming_zero, incoming_one = path[k][1], path[k][2]
                _unwind(path, k)
                break
        cover = tree.cover[node]
        recurse(hot, path, tree.cover[hot] / cover * incoming_zero, incoming_one, split)
        recurse(cold, path, tree.cover[cold] / cover * incoming_zero, 0.0, split)

    recurse(0, [], 1.0, 1.0, -1)


def _extend(path: _Path, zero: float, one: float, feature: int) -> None:
    depth = len(path)
    path.append([float(feature), zero, one, 1.0 if depth == 0 else 0.0])
    for i in range(depth - 1, -1, -1):
        path[i + 1][3] += one * path[i][3] * (i + 1) / (depth + 1)
        path[i][3] = zero * path[i][3] * (depth - i) / (depth + 1)


def _unwind(path: _Path, index: int) -> None:
    depth = len(path) - 1
    zero, one = path[index][1], path[index][2]
    next_one = path[depth][3]
    for i in range(depth - 1, -1, -1):
        if one != 0:
            kept = path[i][3]
            path[i][3] = next_one * (depth + 1) / ((i + 1) * one)
            next_one = kept - path[i][3] * zero * (depth - i) / (depth + 1)
        else:
            path[i][3] = path[i][3] * (depth + 1) / (zero * (depth - i))
    for i in range(index, depth):
        path[i][:3] = path[i + 1][:3]
    path.pop()


def _unwound_sum(path: _Path, index: int) -> float:
    depth = len(path) - 1
    zero, one = path[index][1], path[index][2]
    next_one = path[depth][3]
    total = 0.0
    for i in range(depth - 1, -1, -1):
        if one != 0:
            share = next_one / ((i + 1) * one)
            total += share
            next_one = path[i][3] - share * zero * (depth - i)
        else:
            total += path[i][3] / (zero * (depth - i))
    return total * (depth + 1)
