"""Scoring a batch's records through the one ``Scorer`` into result lines.

Each record becomes exactly one line of ``results.ndjson.part`` (and a RiskAssessment per
prediction in ``riskassessment.ndjson.part`` when asked): its predictions or why it failed.
A record's failure never escapes as an exception, except ``MODEL_UNAVAILABLE``: that is the
model's state, not the record's fault, and it stops the job so the record is scored later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from agent.batch.items import BadItem, BatchItem, RecordItem, VectorItem
from agent.batch.outputs import error_line, predictions_line, vector_line
from agent.errors import AgentError, RuntimeFault, StoreError, UnknownModel
from agent.outputs.riskassessment import risk_assessment
from agent.types import IntakePath, Prediction, Scorer, ScoreRequest

log = logging.getLogger(__name__)

RESULTS_PART = "results.ndjson.part"
RISK_PART = "riskassessment.ndjson.part"

MODEL_UNAVAILABLE = (StoreError, UnknownModel)
"""Scorer errors that are no fault of the record (the model is not installed or not served
now): they stop the job, which resumes from its last checkpoint, instead of failing records."""

Unit = list[tuple[int, BatchItem]]  # consecutive records with their 1-based positions
Line = tuple[str, bytes]  # (part file, bytes to append)


@runtime_checkable
class NamesRiskOutput(Protocol):
    """A scorer that knows which output a model's RiskAssessment reports (the pipeline)."""

    def risk_output(self, name: str) -> str: ...


class ResultLines:
    """The result lines of a unit of records (one record, or a batch of feature rows)."""

    def __init__(
        self, scorer: Scorer, intake: IntakePath, caller: str, as_of: datetime | None
    ) -> None:
        self.scorer = scorer
        self.intake = intake
        self.caller = caller
        self.as_of = as_of

    def of(self, unit: Unit, model: str, job_id: str, risk: bool) -> Iterator[Line]:
        position, item = unit[0]
        if isinstance(item, VectorItem):
            rows = [(p, i) for p, i in unit if isinstance(i, VectorItem)]
            yield from self._vectors(rows, model)
        elif isinstance(item, BadItem):
            line = error_line(position, item.lines, item.label, item.reason, item.detail)
            yield RESULTS_PART, line
        elif isinstance(item, RecordItem):
            yield from self._record(position, item, model, f"{job_id}:{position}", risk)

    def _record(
        self, position: int, item: RecordItem, model: str, request_id: str, risk: bool
    ) -> Iterator[Line]:
        request = ScoreRequest(
            model=model,
            body=item.body,
            format=item.format,
            intake=self.intake,
            as_of=self.as_of,
            caller=self.caller,
            request_id=request_id,
        )
        try:
            predictions = self.scorer.score(request)
        except MODEL_UNAVAILABLE:
            raise
        except AgentError as exc:
            yield RESULTS_PART, error_line(position, item.lines, item.label, exc.reason, str(exc))
            return
        except Exception as exc:  # a bug scoring one record must not stop the file
            log.error(
                "scoring a record failed unexpectedly", extra={"error_type": type(exc).__name__}
            )
            detail = "unexpected error while scoring"
            yield (
                RESULTS_PART,
                error_line(position, item.lines, item.label, "internal", detail),
            )
            return
        if not predictions:
            detail = "the record holds no patient to score"
            yield RESULTS_PART, error_line(position, item.lines, item.label, "no_patient", detail)
            return
        yield (
            RESULTS_PART,
            predictions_line(position, item.lines, item.label, predictions),
        )
        if risk:
            occurrence = datetime.now(UTC).isoformat(timespec="seconds")
            for prediction in predictions:
                resource = risk_assessment(
                    prediction, self._risk_output(prediction), occurrence=occurrence
                )
                yield RISK_PART, json.dumps(resource, separators=(",", ":")).encode() + b"\n"

    def _risk_output(self, prediction: Prediction) -> str:
        """The scorer's choice when it names one, else the model's last output."""
        if isinstance(self.scorer, NamesRiskOutput):
            try:
                name = self.scorer.risk_output(prediction.model)
            except AgentError:
                name = ""
            if name in prediction.outputs:
                return name
        return list(prediction.outputs)[-1]

    def _vectors(self, rows: Sequence[tuple[int, VectorItem]], model: str) -> Iterator[Line]:
        """One call for the batch; if it fails, row by row so a bad row fails alone."""
        try:
            results = self.scorer.score_vector(model, [i.row for _, i in rows], self.intake)
            if len(results) != len(rows):
                raise RuntimeFault("the scorer returned a wrong number of rows")
        except MODEL_UNAVAILABLE:
            raise
        except Exception as exc:
            if len(rows) > 1:
                for row in rows:
                    yield from self._vectors([row], model)
                return
            position, item = rows[0]
            reason = exc.reason if isinstance(exc, AgentError) else "internal"
            detail = str(exc) if isinstance(exc, AgentError) else "unexpected error while scoring"
            if not isinstance(exc, AgentError):
                log.error(
                    "scoring a row failed unexpectedly", extra={"error_type": type(exc).__name__}
                )
            yield RESULTS_PART, error_line(position, item.lines, item.label, reason, detail)
            return
        for (position, item), outputs in zip(rows, results, strict=True):
            yield RESULTS_PART, vector_line(position, item.lines, item.label, model, None, outputs)
