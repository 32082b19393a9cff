"""Scoring a batch's records through the data plane into result lines.

Each record becomes exactly one line of ``results.ndjson.part`` (and a RiskAssessment per
prediction in ``riskassessment.ndjson.part`` when asked): its predictions or why it failed.
A record's failure never escapes as an exception, except ``MODEL_UNAVAILABLE``: that is the
model's state, not the record's fault, and it stops the job so the record is scored later.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from agent.batch.csv_rows import UnreadableRow, vector_row
from agent.batch.items import BadItem, BatchItem, RecordItem, VectorItem
from agent.batch.outputs import error_line, outcome_line, outcomes_line, result_line
from agent.dataplane import DataPlane, ModelView
from agent.errors import AgentError, RuntimeFault, StoreError, UnknownModel
from agent.outputs.riskassessment import risk_assessment
from agent.types import IntakePath, ScoreRequest

RESULTS_PART = "results.ndjson.part"
RISK_PART = "riskassessment.ndjson.part"

MODEL_UNAVAILABLE = (StoreError, UnknownModel)
"""Data-plane errors that are no fault of the record (the model is not installed or not served
now): they stop the job, which resumes from its last checkpoint, instead of failing records."""

Unit = list[tuple[int, BatchItem]]  # consecutive records with their 1-based positions
Line = tuple[str, bytes]  # (part file, bytes to append)


class ResultLines:
    """The result lines of a unit of records (one record, or a batch of feature rows)."""

    def __init__(
        self, plane: DataPlane, intake: IntakePath, caller: str, as_of: datetime | None
    ) -> None:
        self.plane = plane
        self.intake = intake
        self.caller = caller
        self.as_of = as_of

    def of(self, unit: Unit, model: str, job_id: str, risk: bool) -> Iterator[Line]:
        position, item = unit[0]
        if isinstance(item, BadItem):
            line = error_line(position, item.lines, item.label, item.reason, item.detail)
            yield RESULTS_PART, line
            return
        view = self.plane.model(model)  # MODEL_UNAVAILABLE stops the job, see above
        if isinstance(item, VectorItem):
            rows = [(p, i) for p, i in unit if isinstance(i, VectorItem)]
            yield from self._vectors(rows, view, job_id)
        elif isinstance(item, RecordItem):
            yield from self._record(position, item, view, f"{job_id}:{position}", risk)

    def _record(
        self, position: int, item: RecordItem, model: ModelView, request_id: str, risk: bool
    ) -> Iterator[Line]:
        request = ScoreRequest(
            model=model.name,
            body=item.body,
            format=item.format,
            intake=self.intake,
            as_of=self.as_of,
            caller=self.caller,
            request_id=request_id,
        )
        try:
            result = self.plane.score(request, model)
        except MODEL_UNAVAILABLE:
            raise
        except AgentError as exc:  # counted by the data plane (bugs as ``internal``)
            yield RESULTS_PART, error_line(position, item.lines, item.label, exc.reason, str(exc))
            return
        yield RESULTS_PART, outcomes_line(position, item.lines, item.label, result)
        if risk:
            for prediction in result.predictions:
                resource = risk_assessment(prediction, model.risk_output)
                yield RISK_PART, result_line(resource)

    def _vectors(
        self, rows: Sequence[tuple[int, VectorItem]], model: ModelView, job_id: str
    ) -> Iterator[Line]:
        """Each row read against ``model`` (a row that cannot be read fails alone), the rest
        scored in one call; lines in the rows' order."""
        failed: dict[int, Line] = {}
        readable: list[tuple[int, VectorItem, tuple[float, ...]]] = []
        for position, item in rows:
            try:
                readable.append((position, item, vector_row(item, model)))
            except UnreadableRow as exc:
                detail = str(exc)
                line = error_line(position, item.lines, item.label, exc.reason, detail, exc.feature)
                failed[position] = (RESULTS_PART, line)
        scored = dict(self._scored(readable, model, job_id))
        for position, _ in rows:
            yield failed[position] if position in failed else scored[position]

    def _scored(
        self,
        rows: Sequence[tuple[int, VectorItem, tuple[float, ...]]],
        model: ModelView,
        job_id: str,
    ) -> Iterator[tuple[int, Line]]:
        """One call for the batch: each row scored or refused alone (the data plane reads
        each under the mapping's rules and isolates a row that traps the model). Should the
        call fail as a whole (a bug), row by row, so only the row that causes it fails.
        Audited as one request named by its first row, over the rows' cells."""
        if not rows:
            return
        cells = "\n".join(",".join(item.cells) for _, item, _ in rows)
        try:
            result = self.plane.score_vectors(
                model,
                [r for _, _, r in rows],
                self.intake,
                caller=self.caller,
                request_id=f"{job_id}:{rows[0][0]}",
                body=cells.encode(),
            )
            if len(result.outcomes) != len(rows):
                raise RuntimeFault("the data plane returned a wrong number of rows")
        except MODEL_UNAVAILABLE:
            raise
        except AgentError as exc:
            if len(rows) > 1:
                for row in rows:
                    yield from self._scored([row], model, job_id)
                return
            position, item, _ = rows[0]
            line = error_line(position, item.lines, item.label, exc.reason, str(exc))
            yield position, (RESULTS_PART, line)
            return
        for (position, item, _), outcome in zip(rows, result.outcomes, strict=True):
            line = outcome_line(position, item.lines, item.label, result, outcome)
            yield position, (RESULTS_PART, line)
