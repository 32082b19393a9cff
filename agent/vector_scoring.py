"""From feature vectors to one outcome per patient, for mapped records and raw rows alike.

A record is mapped (``SiteMapping.extract``); a raw row (an Open Inference Protocol tensor
row, a feature CSV row) is read (``SiteMapping.read``) under the same rules: each feature's
``missing``, ``unseen`` and plausible range with its ``out_of_range`` policy, then the
imputation budget. Both then take the one road here: one inference call for every readable
vector (row by row when it fails, so a row that traps is refused alone), each prediction
observed by the monitor, each refusal counted under its reason. Nothing here knows how the
caller renders an outcome.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from agent.errors import RecordError, RuntimeFault, UnmappableRecord
from agent.monitor import Monitor
from agent.serving import ServedModel
from agent.types import FeatureVector, IntakePath, PatientOutcome, Prediction, Refusal

Read = tuple[list[PatientOutcome], dict[int, FeatureVector]]
"""What reading a request gives: one outcome per patient in input order (refused ones carry
their refusal, the others neither prediction nor refusal yet) and, by position, the vector
of each readable one."""


def predict_rows(
    served: ServedModel, rows: Sequence[Sequence[float]]
) -> list[Sequence[float] | Refusal]:
    """One call for all rows; when it fails, row by row, so a row that traps the
    module (or runs out of fuel) is refused alone."""
    if not rows:
        return []
    try:
        return list(served.runtime.predict(rows))
    except RuntimeFault as exc:
        if len(rows) == 1:
            return [Refusal(exc.reason, str(exc))]
    return [result for row in rows for result in predict_rows(served, [row])]


def read_rows(served: ServedModel, rows: Sequence[Sequence[float]]) -> Read:
    """Raw rows in the model's input order, each read by the site mapping (see the module).
    A row refused gets its reason (``out_of_range`` naming the feature and the range, never
    the value; ``too_much_imputed`` listing the features...). Outcomes are in the rows'
    order and name no patient (the caller knows its rows by position).
    RecordError (the whole request) when a row has the wrong width or an infinity: that is
    a malformed request, not a patient's data."""
    width = len(served.manifest.inputs)
    if any(len(row) != width for row in rows):
        raise RecordError(f"each row needs {width} features in manifest order")
    if any(math.isinf(value) for row in rows for value in row):
        raise RecordError("feature values must be finite numbers (NaN means missing)")
    pending: list[PatientOutcome] = []
    vectors: dict[int, FeatureVector] = {}
    for index, row in enumerate(rows):
        refusal = None
        try:
            vectors[index] = served.mapping.read(row)
        except UnmappableRecord as exc:
            refusal = Refusal(exc.reason, str(exc), exc.feature)
        pending.append(PatientOutcome(reference="", label="", refusal=refusal))
    return pending, vectors


class OutcomeScorer:
    """Scores what was read and observes it (see the module)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def outcomes(
        self,
        served: ServedModel,
        read: Read,
        as_of: datetime,
        intake: IntakePath,
        started: float,
        *,
        explain: bool = False,
    ) -> list[PatientOutcome]:
        """Each readable vector scored in one call; ``started``: when the request began
        (reading included), for the per-record latencies. With ``explain``, each prediction
        carries its feature contributions."""
        pending, vectors = read
        mapped = time.perf_counter()
        rows = predict_rows(served, [v.values for v in vectors.values()])
        inferred = time.perf_counter()
        per_record = 1.0 / max(len(vectors), 1)
        mapping_seconds = (mapped - started) * per_record
        inference_seconds = (inferred - mapped) * per_record
        name, version, digest = served.name, served.version, served.digest
        observe = self.monitor.observe
        outcomes = list(pending)
        for (index, vector), row in zip(vectors.items(), rows, strict=True):
            if isinstance(row, Refusal):
                outcomes[index] = replace(pending[index], refusal=row)
                continue
            outputs = served.outputs(row)
            observe(
                name,
                version,
                intake,
                vector,
                outputs,
                mapping_seconds,
                inference_seconds,
                (time.perf_counter() - started) * per_record,
            )
            outcome = pending[index]
            prediction = Prediction(
                name,
                version,
                digest,
                outputs,
                vector,
                outcome.label,
                as_of,
                outcome.subject,
                served.contributions(vector.values) if explain else None,
            )  # positional, as PatientOutcome below: each keyword costs, on every row
            outcomes[index] = PatientOutcome(
                outcome.reference, outcome.label, prediction, None, outcome.subject
            )  # not dataclasses.replace: twice its speed, on every row
        for outcome in outcomes:
            if outcome.refusal is not None:
                self.monitor.observe_error(served.name, intake, outcome.refusal.reason)
        return outcomes
