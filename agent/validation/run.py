"""A validation run: every labelled moment scored through the pipeline, then summarized.

Outcome rows find their patient through any name the patient's record carries (see
``history``); a name two patients share is ambiguous and its rows are refused rather than
guessed. Rows are refused with the pipeline's own reason when it would have refused the
record live (a vital sign missing from its window, an unreadable record), with
``no_record`` when no input holds the patient. The report holds aggregates only: no
identifier, no row, and no figure for fewer than ``PATIENTS_MIN`` patients.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.dataplane import DataPlane
from agent.errors import AgentError
from agent.validation.derived_labels import Labeler
from agent.validation.history import PatientHistory
from agent.validation.metrics import LEVEL
from agent.validation.outcomes_csv import Outcome, OutcomeTable
from agent.validation.performance import PATIENTS_MIN, Labelled, summarize
from agent.validation.scoring import score_one
from agent.validation.subgroups import AGE, FIXED_DIMENSIONS, SEX, age_group, sex_group
from agent.validation.verdicts import calibration_verdicts, compare_with_training

REPORT_FORMAT = 1
NO_RECORD = "no_record"  # no input record holds the patient an outcome row names
AMBIGUOUS = "ambiguous_patient"  # the name an outcome row uses belongs to several patients


@dataclass(frozen=True)
class ModelUnderTest:
    """What is validated: the served model and how the site reads its answer."""

    name: str
    version: str
    bundle_digest: str
    risk_output: str
    thresholds: Sequence[tuple[str, float]]  # (name, risk at or above which it alerts)
    training_metrics: Mapping[str, float]  # the manifest's provenance metrics


Result = tuple[Outcome, Labelled | None, str | None]  # the row, its score or refusal reason
Scored = tuple[Labelled | None, str | None]  # one row's score, or why it was refused


@dataclass(frozen=True)
class Job:
    """One patient's history and the outcome rows to score it for (picklable: a Dask
    worker receives it)."""

    key: str  # the name the outcome rows use for the patient
    number: int  # the patient's position among the histories
    history: PatientHistory
    outcomes: tuple[Outcome, ...]


JobRunner = Callable[[Iterable[Job]], Iterator[tuple[Job, list[Scored]]]]
"""Scores jobs, in any order: in process (``local_runner``) or on Dask workers."""


def local_runner(plane: DataPlane, model: ModelUnderTest, labeler: Labeler | None) -> JobRunner:
    def run(jobs: Iterable[Job]) -> Iterator[tuple[Job, list[Scored]]]:
        for job in jobs:
            yield job, score_job(plane, model, labeler, job)

    return run


def score_job(
    plane: DataPlane, model: ModelUnderTest, labeler: Labeler | None, job: Job
) -> list[Scored]:
    return [
        _score(plane, model, job.history, outcome, job.number, labeler) for outcome in job.outcomes
    ]


def validate(
    run_jobs: JobRunner,
    model: ModelUnderTest,
    outcomes: OutcomeTable,
    histories: Iterable[PatientHistory],
    label_source: str = "the outcomes file",
) -> dict[str, Any]:
    """Score every outcome row's patient as of its time and return the report (JSON-ready).

    Rows without a label take the labeler's, read from the patient's record (a scored row
    whose label cannot be read is refused with the error's reason). Histories stream
    through once (memory holds the outcome rows and their scores, not the records); the
    report does not depend on the order ``run_jobs`` scores them in."""
    owner: dict[str, int] = {}  # outcome key -> the patient number that claimed it
    ambiguous: set[str] = set()
    unreadable: Counter[str] = Counter()
    counted = {"without_outcome": 0}

    def jobs() -> Iterator[Job]:
        for number, history in enumerate(histories):
            if not history.keys:
                unreadable[history.refused or "unreadable"] += 1
                continue
            matched = sorted(k for k in history.keys if k in outcomes.by_patient)
            counted["without_outcome"] += not matched
            for key in matched:
                if owner.setdefault(key, number) != number:
                    ambiguous.add(key)
                    continue
                yield Job(key, number, history, tuple(outcomes.by_patient[key]))

    results: dict[str, list[Result]] = {}
    for job, scores in run_jobs(jobs()):
        results[job.key] = [(o, *s) for o, s in zip(job.outcomes, scores, strict=True)]
    refused: Counter[str] = Counter()
    kept: list[Result] = []
    for key, rows in outcomes.by_patient.items():
        if key not in owner:
            refused[NO_RECORD] += len(rows)
        elif key in ambiguous:
            refused[AMBIGUOUS] += len(rows)
        else:
            kept.extend(results[key])
    for _, scored, reason in kept:
        if scored is None:
            refused[reason or "refused"] += 1
    days = [outcome.as_of.date().isoformat() for outcome, scored, _ in kept if scored]
    counts = {
        "labelled": outcomes.rows,
        "scored": len(days),
        "refused": dict(sorted(refused.items())),
        "records_without_outcome": counted["without_outcome"],
        "unreadable_records": dict(sorted(unreadable.items())),
    }
    # the dates of a handful of patients' moments would say more than an aggregate
    patients = len({item.patient for _, item, _ in kept if item is not None})
    period = {"first": min(days), "last": max(days)} if patients >= PATIENTS_MIN else None
    sample = [scored for _, scored, _ in kept if scored is not None]
    return _report(model, outcomes, sample, counts, period, label_source)


def _score(
    plane: DataPlane,
    model: ModelUnderTest,
    history: PatientHistory,
    outcome: Outcome,
    number: int,
    labeler: Labeler | None,
) -> tuple[Labelled | None, str | None]:
    """One outcome row through the pipeline: its labelled score, or the refusal reason."""
    if history.refused is not None:
        return None, history.refused
    outputs, reason = score_one(plane, model.name, history.body, history.format, outcome.as_of)
    if outputs is None:
        return None, reason
    label = outcome.label
    if label is None:
        if labeler is None:
            raise ValueError("an unlabelled outcome row needs a labeler")
        try:
            label = labeler(history, outcome.as_of)
        except AgentError as exc:
            return None, exc.reason
    groups = {
        SEX: sex_group(history.gender),
        AGE: age_group(history.born, outcome.as_of.date()),
        **outcome.groups,
    }
    return Labelled(float(outputs[model.risk_output]), label, number, groups), None


def _report(
    model: ModelUnderTest,
    outcomes: OutcomeTable,
    sample: Sequence[Labelled],
    counts: Mapping[str, Any],
    period: Mapping[str, str] | None,
    label_source: str,
) -> dict[str, Any]:
    overall = summarize(sample, model.thresholds, curves=True)
    return {
        "report": "edge-agent validation",
        "format": REPORT_FORMAT,
        "model": {
            "name": model.name,
            "version": model.version,
            "bundle_digest": model.bundle_digest,
            "risk_output": model.risk_output,
            "thresholds": {name: value for name, value in model.thresholds},
        },
        "method": {
            "labels": label_source,
            "confidence_level": LEVEL,
            "auroc_interval": "DeLong (fast midrank algorithm), normal approximation",
            "brier_interval": "normal approximation to the mean squared error",
            "prevalence_interval": "Wilson score",
            "calibration": "logistic recalibration on logit(risk): intercept with slope fixed "
            "at 1 (calibration-in-the-large), slope from the joint fit; Wald intervals",
            "reliability_curve": "groups of equal size by predicted risk (up to 10)",
            "alert": "a risk at or above a threshold alerts",
            "subgroup_min_patients": PATIENTS_MIN,
        },
        "period": period,
        "counts": counts,
        "overall": overall,
        "training_metrics": dict(model.training_metrics),
        "verdicts": compare_with_training(model.training_metrics, overall)
        + calibration_verdicts(overall),
        "subgroups": [
            _dimension(dimension, sample, model.thresholds)
            for dimension in (*FIXED_DIMENSIONS, *outcomes.group_columns)
        ],
    }


def _dimension(
    dimension: str, sample: Sequence[Labelled], thresholds: Sequence[tuple[str, float]]
) -> dict[str, Any]:
    """Figures per group of ``dimension``. Suppressed groups of a fixed vocabulary are
    listed by name; those of a file's own column are only counted."""
    by_group: dict[str, list[Labelled]] = {}
    for item in sample:
        by_group.setdefault(item.groups[dimension], []).append(item)
    named = dimension in FIXED_DIMENSIONS
    groups = []
    suppressed = 0
    for name in sorted(by_group):
        figures = summarize(by_group[name], thresholds, curves=False)
        if figures["suppressed"] and not named:
            suppressed += 1
            continue
        groups.append({"group": name, **figures})
    return {"dimension": dimension, "groups": groups, "suppressed_groups": suppressed}
