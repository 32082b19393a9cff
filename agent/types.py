"""Neutral types that cross part boundaries: what intake hands the pipeline, what mapping
hands the runtime, what the pipeline hands back. A leaf module: imports nothing from the
package. Values here may hold patient data; they are never logged or used as labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class IntakePath(StrEnum):
    """Where a request came in; a metric label value."""

    http = "http"
    oip = "oip"
    cds_hooks = "cds_hooks"
    mllp = "mllp"
    drop_folder = "drop_folder"
    cli = "cli"


class RecordFormat(StrEnum):
    fhir_json = "fhir_json"  # one resource or a Bundle
    fhir_ndjson = "fhir_ndjson"  # bulk export: one resource or Bundle per line
    hl7v2 = "hl7v2"  # one message, or a batch (FHS/BHS)


@dataclass(frozen=True)
class ElementReach:
    """What a site mapping's features can read, so that the ``essential`` validation checks
    exactly that (docs/records.md). Built once when the mapping loads.

    ``names``: (resource type, the names its FHIRPath expressions use) pairs, where the
    names are every identifier of the expressions (element names among them, function names
    too: an over-approximation is safe), or None where an expression can reach any element
    (``descendants()``, ``children()``, ``resolve()``).

    ``codes``: the (system, code) pairs whose Observations (or components) a feature reads;
    an Observation coded with none of them is read only for its code, status and subject,
    and only those are checked. None: any Observation may be read (no mapping, or a FHIRPath
    feature over every Observation), so each is checked in full.
    """

    names: tuple[tuple[str, frozenset[str] | None], ...] = ()
    codes: frozenset[tuple[str, str]] | None = None

    def of(self, resource_type: str) -> frozenset[str] | None:
        """The names used on ``resource_type`` (empty: none read it), None: any element."""
        for name, used in self.names:
            if name == resource_type:
                return used
        return frozenset()


@dataclass(frozen=True)
class PatientRecord:
    """Everything known about one patient for one scoring, as FHIR R4 resources (dicts).

    HL7 v2 arrives here already converted to FHIR, so mapping sees one model. ``label`` is a
    caller-side correlation string (a bundle entry, a message control id, a line number);
    it is echoed to the caller but never logged.
    """

    patient: Mapping[str, Any] | None
    observations: Sequence[Mapping[str, Any]]
    encounters: Sequence[Mapping[str, Any]] = ()
    label: str = ""
    source: str = ""  # "fhir" or "hl7v2": where the facts came from
    subject: Mapping[str, Any] | None = None  # a FHIR Reference to the patient (reference
    # "Patient/7" or an identifier from PID-3), for the answer and RiskAssessment.subject
    problem: str | None = None  # why this record cannot be scored although it was read
    # (resources that name no patient among several): the pipeline refuses it as no_subject

    @property
    def reference(self) -> str:
        """What the caller sent to name this patient: ``Patient/7``, or PID-3's identifier.
        Echoed in answers so the caller can match outcomes; never logged."""
        subject = self.subject or {}
        if isinstance(subject.get("reference"), str):
            return str(subject["reference"])
        identifier = subject.get("identifier")
        if isinstance(identifier, Mapping) and isinstance(identifier.get("value"), str):
            return str(identifier["value"])
        return self.label


@dataclass(frozen=True)
class FeatureValue:
    """One model input and where it came from (the explain output)."""

    name: str
    value: float | None  # as fed to the model (categorical: level index); None = missing
    display: str | float | None  # as a person reads it (a level name, a number in model unit)
    source: str  # "Observation 8867-4 (latest of 3)", "Patient.birthDate", "imputed median"
    unit: str | None = None
    conversion: str | None = None  # "degF -> Cel" when a unit was converted
    imputed: bool = False
    out_of_range: bool = False
    unseen_category: bool = False


@dataclass(frozen=True)
class FeatureVector:
    values: tuple[float, ...]
    features: tuple[FeatureValue, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Contributions:
    """How much each feature moved one patient's ``output`` (``agent.contributions``):
    ``base`` plus every value is the output in ``space`` (``log-odds``: the output is the
    logistic of it; ``probability`` or ``value``: the output itself). ``unavailable`` says
    why a model has none, and then the other fields are empty."""

    output: str = ""
    space: str = ""
    base: float = 0.0
    values: tuple[tuple[str, float], ...] = ()  # (feature, contribution), manifest order
    unavailable: str = ""


@dataclass(frozen=True)
class Prediction:
    model: str
    version: str
    bundle_digest: str  # sha256 of manifest.json
    outputs: Mapping[str, float]
    vector: FeatureVector
    label: str = ""
    as_of: datetime | None = None  # the clinical time the record was read as of
    subject: Mapping[str, Any] | None = None  # FHIR Reference to the patient scored
    contributions: Contributions | None = None  # computed only when a caller asks (explain)


@dataclass(frozen=True)
class Refusal:
    """Why one patient was not scored. ``reason`` is a slug from the one vocabulary
    (docs/outcomes.md); ``detail`` names features, ranges, units and places, never a value;
    ``feature`` is the (first) feature concerned, when there is one."""

    reason: str
    detail: str
    feature: str | None = None


@dataclass(frozen=True)
class PatientOutcome:
    """One patient record's outcome: scored (``prediction``) or refused (``refusal``)."""

    reference: str  # the caller's name for the patient (see PatientRecord.reference)
    label: str  # the caller-side correlation string of the record
    prediction: Prediction | None = None
    refusal: Refusal | None = None
    subject: Mapping[str, Any] | None = None

    @property
    def scored(self) -> bool:
        return self.prediction is not None


@dataclass(frozen=True)
class ScoreResult:
    """The answer to one ``ScoreRequest``: the model that answered (taken once, at the
    start) and one outcome per patient record, in input order. Never empty: an input
    with no patient raises ``NoPatient`` instead."""

    model: str
    version: str
    bundle_digest: str
    outcomes: tuple[PatientOutcome, ...]
    as_of: datetime

    @property
    def predictions(self) -> list[Prediction]:
        return [o.prediction for o in self.outcomes if o.prediction is not None]

    @property
    def refused(self) -> list[PatientOutcome]:
        return [o for o in self.outcomes if o.prediction is None]


@dataclass(frozen=True)
class ScoreRequest:
    """The neutral request every intake path builds and hands to the one pipeline."""

    model: str
    body: bytes
    format: RecordFormat
    intake: IntakePath
    as_of: datetime | None = None  # look-back windows end here; None = now
    caller: str = "anonymous"
    request_id: str = ""
    explain: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EdgeRefusal:
    """A request an edge refused before reading its body or routing it (the HTTP guard,
    the listener's head cap), as the audit log records it: who and what was refused, never
    the request's content. The edge bounds every field: ``route`` is a route template (or
    ``unmatched``), never the path as sent; ``model`` is a configured model's name or
    empty; ``token`` is a matched token's id, ``absent`` or ``wrong`` (never the token
    itself), None where the edge asks for none."""

    when: float  # Unix time of the (first) refusal this stands for
    request_id: str
    intake: IntakePath
    peer: str  # the connection's address
    route: str
    reason: str  # a slug of docs/outcomes.md
    model: str = ""
    token: str | None = None
    count: int = 1  # identical refusals from this peer this entry stands for


@dataclass(frozen=True)
class OutcomeReport:
    """An outcome that arrived after the predictions: the patient (as the caller names
    it, like in a ScoreRequest), whether the event happened (1) or not (0), and when."""

    reference: str
    label: int
    time: datetime


@dataclass(frozen=True)
class OutcomeReceipt:
    received: int
    joined: int  # outcomes that labelled at least one earlier prediction


@dataclass(frozen=True)
class FeatureHistogram:
    """One input feature's training reference and live drift window over the same bins,
    for the status page: bins and counts only, never a value or a record.

    Numeric features have the reference's bin ``edges`` (len(edges) + 1 bins: below the
    first edge, between edges, at or above the last, a value on an edge counting in the bin
    above). Categorical features have their ``levels``, then one last bin for categories
    the mapping could not place. ``live`` counts the non-missing values in the window.
    """

    feature: str
    unit: str | None
    edges: tuple[float, ...]
    levels: tuple[str, ...]
    reference: tuple[float, ...]  # training fractions per bin
    live: tuple[int, ...]  # values per bin in the live window
    statistic: str  # "psi" or "js"
    drift: float | None  # None while the window holds too few values to judge
    state: str  # "ok", "watch", "act" or "insufficient"
