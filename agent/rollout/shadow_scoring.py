"""In the shadow lane, off every request's path: the version that did not answer a record
scores it too, and the pair of risk scores goes into the candidate's running comparison
(``comparison.py``). A record the other version refuses (unmappable under its schema, a
trap) is counted as skipped; a bug is logged and counted, and never stops the lane."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from agent.errors import UnmappableRecord
from agent.types import FeatureVector, PatientOutcome, PatientRecord, Prediction, Refusal

if TYPE_CHECKING:
    from agent.performance.tracker import PerformanceTracker
    from agent.rollout.candidates import Candidate
    from agent.serving import ServedModel

log = logging.getLogger(__name__)

Predict = Callable[["ServedModel", Sequence[Sequence[float]]], list[Sequence[float] | Refusal]]


class ShadowComparer:
    """Scores what the other version answered, for the comparison (see the module)."""

    def __init__(
        self,
        predict: Predict,
        performance: PerformanceTracker | None,
        checkpoint: Callable[[], None],
        every: float,
    ) -> None:
        """``checkpoint`` keeps every candidate's comparison on disk; it runs at most once
        per ``every`` seconds, after a pair is added, in this lane."""
        self._predict = predict
        self._performance = performance
        self._checkpoint = checkpoint
        self._every = every
        self._next_checkpoint = time.monotonic() + every

    def records(
        self,
        candidate: Candidate,
        active: ServedModel,
        records: Sequence[PatientRecord],
        outcomes: Sequence[PatientOutcome],
        as_of: datetime,
        seconds: Mapping[str, float],
    ) -> None:
        """In the shadow lane: score each answered record on the version that did not
        answer it, and add the pair of risk scores to the comparison. A record the other
        version refuses (unmappable under its schema, a trap) is counted as skipped."""
        comparison = candidate.comparison
        try:
            for answerer, other in ((active, candidate.served), (candidate.served, active)):
                pairs = [
                    (record, outcome.prediction)
                    for record, outcome in zip(records, outcomes, strict=True)
                    if outcome.prediction is not None
                    and outcome.prediction.bundle_digest == answerer.digest
                ]
                if not pairs:
                    continue
                begun = time.perf_counter()
                mapped: list[tuple[PatientRecord, FeatureVector]] = []
                known: list[float] = []
                for record, prediction in pairs:
                    try:
                        mapped.append((record, other.mapping.extract(record, as_of)))
                    except UnmappableRecord:
                        comparison.skip("refused")
                        continue
                    known.append(prediction.outputs.get(answerer.risk_output, math.nan))
                rows = [vector.values for _, vector in mapped]
                results = self.pair(
                    candidate, other, rows, known, seconds[answerer.digest], begun, len(pairs)
                )
                self._keep(other, mapped, results, as_of)
        except Exception as exc:  # a bug must not stop the lane; the record stays uncompared
            log.error("shadow comparison failed", extra={"error_type": type(exc).__name__})
            comparison.skip("error")

    def rows(
        self,
        candidate: Candidate,
        active: ServedModel,
        rows: Sequence[Sequence[float]],
        outputs: Sequence[Mapping[str, float]],
        seconds: float,
    ) -> None:
        """In the shadow lane: score raw feature rows (OIP, feature CSVs) on the candidate
        too, when it reads the same features in the same order."""
        other = candidate.served
        try:
            if other.manifest.feature_names() != active.manifest.feature_names():
                candidate.comparison.skip("refused", len(rows))
                return
            known = [out.get(active.risk_output, math.nan) for out in outputs]
            begun = time.perf_counter()
            self.pair(candidate, other, rows, known, seconds, begun, len(rows))
        except Exception as exc:
            log.error("shadow comparison failed", extra={"error_type": type(exc).__name__})
            candidate.comparison.skip("error")

    def pair(
        self,
        candidate: Candidate,
        other: ServedModel,
        rows: Sequence[Sequence[float]],
        known: Sequence[float],
        known_seconds: float,
        begun: float,
        records: int,
    ) -> list[Sequence[float] | Refusal]:
        """Score ``rows`` on ``other`` (the version that did not answer them) and add each
        pair, active first; returns ``other``'s results. ``begun``: when work on these
        ``records`` started (mapping included), for ``other``'s per-record latency."""
        results = self._predict(other, rows)
        other_seconds = (time.perf_counter() - begun) / max(records, 1)
        comparison = candidate.comparison
        for value, row in zip(known, results, strict=True):
            if isinstance(row, Refusal):
                comparison.skip("refused")
                continue
            score = other.outputs(row).get(other.risk_output, math.nan)
            if other is candidate.served:
                comparison.add(value, score, known_seconds, other_seconds)
            else:
                comparison.add(score, value, other_seconds, known_seconds)
        if time.monotonic() >= self._next_checkpoint:
            self._checkpoint()
            self._next_checkpoint = time.monotonic() + self._every
        return results

    def _keep(
        self,
        other: ServedModel,
        mapped: Sequence[tuple[PatientRecord, FeatureVector]],
        results: Sequence[Sequence[float] | Refusal],
        as_of: datetime,
    ) -> None:
        """The version that did not answer keeps its predictions in the prediction store
        too, under its own version, so outcomes give both versions a live AUROC on the same
        patients (the ``max_auroc_drop`` gate)."""
        if self._performance is None:
            return
        kept = [
            (
                record.reference,
                Prediction(
                    model=other.name,
                    version=other.version,
                    bundle_digest=other.digest,
                    outputs=other.outputs(row),
                    vector=vector,
                    as_of=as_of,
                ),
            )
            for (record, vector), row in zip(mapped, results, strict=True)
            if not isinstance(row, Refusal)
        ]
        if kept:
            self._performance.scored(other.name, other.version, other.risk_output, kept)
