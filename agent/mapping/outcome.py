"""A site's outcome definition compiled: did the outcome happen within the horizon after a
given time? Read only by validation (``edge-agent validate``), which labels a site's
history with it when the outcomes file gives moments without labels."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.mapping.facts import VOID_STATUS, observation_time, parse_time
from agent.types import ElementReach, PatientRecord


@dataclass(frozen=True)
class CompiledOutcome:
    """``codes`` as ``system|code``; an Observation's code, an Encounter's class, type or
    service type count, timed by the Observation's effective time and the Encounter's
    start; ``deceased`` counts ``Patient.deceasedDateTime`` (a bare ``deceasedBoolean``
    has no time and cannot be placed in the horizon)."""

    codes: frozenset[str]
    deceased: bool
    horizon: timedelta

    # What ``_events`` reads beyond the ``essential`` checks, so that validation checks it.
    reach = ElementReach(
        (
            ("Encounter", frozenset({"class", "serviceType", "type"})),
            ("Patient", frozenset({"deceased"})),
        )
    )

    def happened(self, record: PatientRecord, as_of: datetime) -> bool:
        """Whether an outcome event falls after ``as_of`` and within the horizon."""
        end = as_of + self.horizon
        return any(as_of < moment <= end for moment in self._events(record))

    def _events(self, record: PatientRecord) -> Iterator[datetime]:
        for observation in record.observations:
            if observation.get("status") not in VOID_STATUS and self._coded(
                observation.get("code")
            ):
                moment = observation_time(observation)
                if moment is not None:
                    yield moment
        for encounter in record.encounters:
            if encounter.get("status") in VOID_STATUS:
                continue
            concepts = [{"coding": [encounter.get("class")]}, encounter.get("serviceType")]
            types = encounter.get("type")
            concepts += types if isinstance(types, list) else []
            if any(self._coded(c) for c in concepts):
                period = encounter.get("period")
                moment = parse_time(period.get("start")) if isinstance(period, dict) else None
                if moment is not None:
                    yield moment
        patient = record.patient
        if self.deceased and patient is not None:
            moment = parse_time(patient.get("deceasedDateTime"))
            if moment is not None:
                yield moment

    def _coded(self, concept: Any) -> bool:
        """Whether a CodeableConcept carries one of the outcome's codes."""
        codings = concept.get("coding") if isinstance(concept, Mapping) else None
        return any(
            isinstance(c, Mapping) and f"{c.get('system', '')}|{c.get('code')}" in self.codes
            for c in (codings if isinstance(codings, list) else ())
        )
