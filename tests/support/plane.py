"""A small scripted ``DataPlane`` for the intake paths' own tests (batch engine, drop folder,
MLLP listener): the test decides what a record scores to, so it can check that each answer
belongs to its input, without a compiled model. The real pipeline is exercised by the
integration tests and the ``*_pipeline`` tests beside these.

A subclass implements ``predict(request)`` (a list of predictions or a typed AgentError,
as the pipeline raises for a request it cannot read) and, when it reads feature rows,
``predict_rows(rows)`` (outputs, or a ``Refusal`` for a row refused); this base wraps
them in the protocol's shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.bundle.manifest import (
    MODEL_FILE,
    BundleManifest,
    FileEntry,
    InputFeature,
    OutputKind,
    OutputSpec,
    Provenance,
    ReferenceStats,
)
from agent.dataplane import ModelView
from agent.errors import AgentError, InternalError, UnknownModel
from agent.limits import Limits
from agent.types import (
    EdgeRefusal,
    FeatureHistogram,
    FeatureVector,
    IntakePath,
    OutcomeReceipt,
    OutcomeReport,
    PatientOutcome,
    Prediction,
    Refusal,
    ScoreRequest,
    ScoreResult,
)


@dataclass(frozen=True)
class Thresholds:
    warning: float = 0.3
    critical: float = 0.6


@dataclass(frozen=True)
class StubModel:
    """A ``ModelView`` of a model that is not compiled: its manifest names numeric
    ``features`` (what feature CSVs are read against) and nothing else."""

    name: str
    version: str = "1.0.0"
    digest: str = "0" * 64
    signer_keyid: str = "test"
    risk_output: str = "risk"
    cards: Thresholds = field(default_factory=Thresholds)
    prefetch_codes: frozenset[str] = frozenset()
    features: tuple[str, ...] = ()

    @property
    def manifest(self) -> BundleManifest:
        return BundleManifest(
            name=self.name,
            version=self.version,
            abi_version=1,
            inputs=[InputFeature(name=n) for n in self.features],
            outputs=[OutputSpec(name=self.risk_output, kind=OutputKind.probability)],
            reference=ReferenceStats(rows=0, features={}),
            provenance=Provenance(
                training_data_sha256="0" * 64, creator="test", created=datetime(2026, 1, 1)
            ),
            files={MODEL_FILE: FileEntry(sha256="0" * 64, size=0)},
        )


class ScriptedPlane:
    """Implements ``agent.dataplane.DataPlane`` around ``predict`` / ``predict_rows``."""

    version = "1.0.0"
    digest = "0" * 64
    features: tuple[str, ...] = ("hr", "temp")  # the model's inputs, for feature CSVs

    def __init__(self, limits: Limits | None = None, *, keep_requests: bool = False) -> None:
        self.refusals: list[tuple[str, str]] = []  # (model, reason) counted at the edges
        self.audited: list[EdgeRefusal] = []  # edge refusals handed to the audit log
        self.requests: list[ScoreRequest] = []  # what reached score(), when kept
        self._keep_requests = keep_requests  # off by default: batch tests score thousands
        self._limits = limits or Limits()

    @property
    def limits(self) -> Limits:
        return self._limits

    def model(self, name: str, version: str | None = None) -> ModelView:
        if version is not None and version != self.version:
            raise UnknownModel("version not served")
        return StubModel(name, self.version, self.digest, features=self.features)

    def models(self) -> list[ModelView]:
        return []

    def readiness(self) -> dict[str, str | None]:
        return {}

    def status(self) -> Mapping[str, Any]:
        return {
            "site": "test",
            "ready": True,
            "configured": [],
            "act": {"psi": 0.25, "js": 0.1},
            "models": {},
        }

    def feature_histograms(self, model: ModelView) -> list[FeatureHistogram]:
        return []

    def record_outcomes(self, model: str, reports: Sequence[OutcomeReport]) -> OutcomeReceipt:
        return OutcomeReceipt(len(reports), 0)

    def count_refusal(self, model: str, intake: IntakePath, error: AgentError) -> None:
        self.refusals.append((model, error.reason))

    def audit_refusal(self, refusal: EdgeRefusal) -> None:
        self.audited.append(refusal)

    def predict(self, request: ScoreRequest) -> list[Prediction]:
        raise NotImplementedError

    def predict_rows(
        self, rows: Sequence[Sequence[float]]
    ) -> Sequence[Mapping[str, float] | Refusal]:
        raise NotImplementedError

    def score(self, request: ScoreRequest, model: ModelView | None = None) -> ScoreResult:
        view = model or self.model(request.model)
        if self._keep_requests:
            self.requests.append(request)
        try:
            predictions = self.predict(request)
        except AgentError:
            raise
        except Exception as exc:  # as the pipeline does: a bug is an InternalError
            raise InternalError("unexpected error") from exc
        outcomes = tuple(
            PatientOutcome(p.label, p.label, prediction=p, subject=p.subject) for p in predictions
        )
        return ScoreResult(view.name, view.version, view.digest, outcomes, datetime.now(UTC))

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
        """Each row scored to what ``predict_rows`` says (a Refusal refuses it)."""
        outcomes = []
        for row, outputs in zip(rows, self.predict_rows(rows), strict=True):
            if isinstance(outputs, Refusal):
                outcomes.append(PatientOutcome("", "", refusal=outputs))
                continue
            vector = FeatureVector(tuple(row), ())
            prediction = Prediction(model.name, model.version, model.digest, outputs, vector)
            outcomes.append(PatientOutcome("", "", prediction=prediction))
        return ScoreResult(
            model.name, model.version, model.digest, tuple(outcomes), datetime.now(UTC)
        )
