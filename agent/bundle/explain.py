"""``explain.json``: what a bundle carries so the agent can say how much each feature moved
a patient's score (``agent.contributions`` computes it).

An optional bundle file, listed in the manifest's ``files`` with its SHA-256 like every
other file, so it is covered by the signature. The compiler writes it for the model
families whose per-feature contributions are exact and cheap to compute without the
training stack: tree ensembles (each tree's nodes with their training covers, for
TreeSHAP) and linear models (coefficients and the reference means). No I/O here: bytes
in, a validated document or ``BundleError`` out.

Validation is structural, so that a broken or hostile document (even a signed one) cannot
send the explainer into a loop, past the end of a list or past Python's recursion limit:
every list of a tree has one entry per node, children come after their parent, a node is
a leaf exactly when it has no children, feature indices are inside the manifest's inputs,
depth and node count are bounded (``limits.explain_depth_max``, ``explain_nodes_max``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.bundle.manifest import BundleManifest, first_invalid_field
from agent.errors import BundleError
from agent.limits import Limits

EXPLAIN_FILE = "explain.json"
EXPLAIN_FORMAT = 1
Space = Literal["log-odds", "probability", "value"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TreeNodes(_Strict):
    """One tree, its nodes in arrays indexed by node id (the root is node 0). A split
    sends a row left when its value (as the module reads it: float32) is ``<=
    threshold``, and a missing value the way ``missing_left`` says."""

    feature: list[int] = Field(description="the feature a node splits on; -1 at a leaf")
    threshold: list[float]
    left: list[int] = Field(description="left child; -1 at a leaf")
    right: list[int] = Field(description="right child; -1 at a leaf")
    missing_left: list[bool]
    cover: list[float] = Field(description="training rows (weight) reaching the node")
    value: list[float] = Field(description="a leaf's output, already weighted; 0 elsewhere")

    @model_validator(mode="after")
    def _shape(self) -> TreeNodes:
        n = len(self.feature)
        columns = (self.threshold, self.left, self.right, self.missing_left)
        if n == 0 or any(len(c) != n for c in (*columns, self.cover, self.value)):
            raise ValueError("every node list needs one entry per node")
        for node in range(n):
            left, right = self.left[node], self.right[node]
            if (left == -1) != (right == -1) or (left == -1) != (self.feature[node] == -1):
                raise ValueError("a node is a leaf exactly when it has no children")
            if left != -1 and not (node < left < n and node < right < n and left != right):
                raise ValueError("children must come after their parent, inside the tree")
            if not self.cover[node] > 0:
                raise ValueError("every node needs a positive cover")
        return self

    def depth(self) -> int:
        depths = [0] * len(self.feature)
        for node in range(len(self.feature)):  # children come after parents
            if self.left[node] != -1:
                depths[self.left[node]] = depths[self.right[node]] = depths[node] + 1
        return max(depths)


class TreeModel(_Strict):
    """A sum of trees plus a constant (boosting's initial score; 0 for a forest, whose
    leaf values carry the 1/n of the average)."""

    method: Literal["tree_shap"] = "tree_shap"
    offset: float = 0.0
    trees: list[TreeNodes]


class LinearModel(_Strict):
    """``intercept + sum(coefficients * x)`` in the explained space; ``means`` are the
    reference rows' column means, the point contributions are measured from."""

    method: Literal["linear"] = "linear"
    intercept: float
    coefficients: list[float]
    means: list[float]

    @model_validator(mode="after")
    def _shape(self) -> LinearModel:
        if len(self.coefficients) != len(self.means):
            raise ValueError("one coefficient and one mean per feature")
        return self


class ExplainDocument(_Strict):
    """Which output is explained, in which space, and the model data to do it."""

    format_version: int = EXPLAIN_FORMAT
    output: str = Field(description="the manifest output the contributions explain")
    space: Space = Field(
        description="what contributions add up to: log-odds (the output is their logistic), "
        "else the output itself"
    )
    model: Annotated[TreeModel | LinearModel, Field(discriminator="method")]

    @model_validator(mode="after")
    def _format(self) -> ExplainDocument:
        if self.format_version != EXPLAIN_FORMAT:
            raise ValueError(f"unsupported explain format_version {self.format_version}")
        return self


def parse_explain(data: bytes, manifest: BundleManifest, limits: Limits) -> ExplainDocument:
    """The validated document, consistent with ``manifest`` (its output exists, feature
    indices fit its inputs) and within the limits; ``BundleError`` naming the field
    otherwise (never a value)."""
    try:
        document = ExplainDocument.model_validate_json(data)
    except ValidationError as exc:
        raise BundleError(f"{EXPLAIN_FILE} is invalid {first_invalid_field(exc)}") from None
    width = len(manifest.inputs)
    if document.output not in [o.name for o in manifest.outputs]:
        raise BundleError(f"{EXPLAIN_FILE} explains an output the manifest does not have")
    model = document.model
    if isinstance(model, LinearModel):
        if len(model.coefficients) != width:
            raise BundleError(f"{EXPLAIN_FILE} has {len(model.coefficients)} coefficients")
        return document
    nodes = sum(len(t.feature) for t in model.trees)
    if nodes > limits.explain_nodes_max:
        raise BundleError(f"{EXPLAIN_FILE} has more than {limits.explain_nodes_max} nodes")
    for tree in model.trees:
        if any(f >= width or f < -1 for f in tree.feature):
            raise BundleError(f"{EXPLAIN_FILE} splits on a feature the model does not read")
        if tree.depth() > limits.explain_depth_max:
            raise BundleError(
                f"{EXPLAIN_FILE} has a tree deeper than {limits.explain_depth_max} levels"
            )
    return document
