"""The data plane: what every intake path (HTTP routes, MLLP, drop folder, CLI) depends on.

Like MLServer's ``DataPlane`` shared by its REST and gRPC servers, but a Protocol: the intake
paths never see the pipeline's class, only these operations. The pipeline
(``agent.pipeline.ScoringPipeline``) is the one implementation; the daemon passes it in.

A request takes a ``ModelView`` once, at its start, and uses it to its end (scoring and
rendering), so a model swapped in meanwhile never mixes one version's outputs with another's
metadata. ``score`` answers one ``PatientOutcome`` per patient record; each edge only renders
outcomes in its protocol and decides nothing anew.

A leaf at run time: it imports only the neutral types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agent.types import (
    EdgeRefusal,
    FeatureHistogram,
    IntakePath,
    OutcomeReceipt,
    OutcomeReport,
    ScoreRequest,
    ScoreResult,
)

if TYPE_CHECKING:
    from agent.bundle.manifest import BundleManifest
    from agent.errors import AgentError
    from agent.limits import Limits


class CardThresholdsView(Protocol):
    @property
    def warning(self) -> float: ...

    @property
    def critical(self) -> float: ...


class ModelView(Protocol):
    """A frozen view of one served model version."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def digest(self) -> str:
        """SHA-256 of the signed manifest: the bundle's identity."""
        ...

    @property
    def signer_keyid(self) -> str: ...

    @property
    def manifest(self) -> BundleManifest: ...

    @property
    def risk_output(self) -> str:
        """The output that RiskAssessment, CDS cards and HL7 results report."""
        ...

    @property
    def cards(self) -> CardThresholdsView: ...

    @property
    def prefetch_codes(self) -> frozenset[str]:
        """Every code the site mapping reads (CDS Hooks prefetch)."""
        ...


class DataPlane(Protocol):
    """Scoring and model state, as the intake paths see them."""

    @property
    def limits(self) -> Limits: ...

    def model(self, name: str, version: str | None = None) -> ModelView:
        """The model serving ``name`` now. UnknownModel if it is not configured here or
        ``version`` is not the one served; StoreError if it has no verified bundle."""
        ...

    def models(self) -> list[ModelView]: ...

    def readiness(self) -> dict[str, str | None]:
        """Each configured model: None when it serves, else why not (PHI-free)."""
        ...

    def score(self, request: ScoreRequest, model: ModelView | None = None) -> ScoreResult:
        """One outcome per patient record. Raises a typed AgentError only when nothing in
        the request could be read (bad input, no patient, unknown or unavailable model);
        an unexpected exception is counted as ``internal`` and raised as InternalError."""
        ...

    def score_vectors(
        self,
        model: ModelView,
        rows: Sequence[Sequence[float]],
        intake: IntakePath,
        *,
        caller: str = "anonymous",
        request_id: str = "",
        body: bytes = b"",
    ) -> ScoreResult:
        """Already-extracted feature rows in manifest order, in the model's units and level
        indexes, NaN for missing (OIP, feature CSVs): one outcome per row, in order, under
        the same rules as a mapped record (the mapping's plausible ranges and
        ``out_of_range``, ``missing``, ``unseen``, ``max_imputed``), so a row is scored
        or refused with a reason from the one vocabulary. Raises a typed AgentError only
        for the whole request (a row of the wrong width, an infinity). ``caller``,
        ``request_id`` and ``body`` (the bytes the rows came in) are for the audit log, as
        a ScoreRequest's are."""
        ...

    def record_outcomes(self, model: str, reports: Sequence[OutcomeReport]) -> OutcomeReceipt:
        """Outcomes that arrived after the predictions, joined to them in the local
        prediction store (NotEnabled when the site keeps none)."""
        ...

    def count_refusal(self, model: str, intake: IntakePath, error: AgentError) -> None:
        """Count a request an edge refused before it reached ``score``."""
        ...

    def audit_refusal(self, refusal: EdgeRefusal) -> None:
        """Write a request an edge refused before reading it to the audit log (compact: no
        body, no HMAC; its fields as bounded by the edge). Counting stays ``count_refusal``'s:
        an edge may stand several identical refusals in one entry (``refusal.count``)."""
        ...

    def status(self) -> Mapping[str, Any]:
        """What the status page shows: site, readiness, per-model monitor snapshot."""
        ...

    def feature_histograms(self, model: ModelView) -> Sequence[FeatureHistogram]:
        """Each input feature of ``model``: its reference bins and its live drift window's,
        with the drift figure (bins only; none while another version's window is kept)."""
        ...
