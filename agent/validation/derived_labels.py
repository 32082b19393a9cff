"""Labels read from the records themselves, by the site mapping's ``outcome:`` section:
for a history whose outcomes are in the EHR (an ICU transfer, a death) rather than in a
curated file. The record is parsed by the records part, as the pipeline parses it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from agent.errors import RecordError
from agent.limits import Limits
from agent.mapping.outcome import CompiledOutcome
from agent.records import RecordsConfig, parse_records
from agent.validation.history import PatientHistory

Labeler = Callable[[PatientHistory, datetime], int]


def record_labeler(outcome: CompiledOutcome, limits: Limits, config: RecordsConfig) -> Labeler:
    """A labeler: 1 when ``outcome`` happened in the patient's record within its horizon
    after the scored time, else 0. RecordError when the record is not one patient's."""

    def label(history: PatientHistory, as_of: datetime) -> int:
        records = parse_records(
            history.body, history.format, limits=limits, config=config, reach=outcome.reach
        )
        if len(records) != 1:
            raise RecordError("a patient's history parsed into other than one record")
        return int(outcome.happened(records[0], as_of))

    return label


def describe(outcome: CompiledOutcome) -> str:
    """The outcome definition in words, for the report's methods (codes are no PHI)."""
    events = sorted(outcome.codes)
    if outcome.deceased:
        events.append("death (Patient.deceasedDateTime)")
    return (
        f"derived from the records: {', '.join(events)} within "
        f"{outcome.horizon.total_seconds() / 3600:g} h after the scored time"
    )
