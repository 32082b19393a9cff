"""What a validation run scores with, built from the agent's config in one place: the serving
pipeline (the same bundle and mapping that serve), the model under test, and the labeler
when labels are read from the records. The CLI builds it once; each Dask worker builds its
own from the same config (``distributed.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.config import load_config
from agent.errors import OutcomesError
from agent.pipeline import ScoringPipeline
from agent.validation.derived_labels import Labeler, describe, record_labeler
from agent.validation.run import ModelUnderTest

LABELS_FROM_FILE = "the outcomes file"


@dataclass(frozen=True)
class ValidationSetup:
    pipeline: ScoringPipeline
    model: ModelUnderTest
    labeler: Labeler | None
    label_source: str


def validation_setup(
    config_path: Path, model: str, labelled: bool, pipeline: ScoringPipeline | None = None
) -> ValidationSetup:
    """The setup for ``model``; ``labelled``: the outcomes file carries its labels (else
    the site mapping's ``outcome:`` section must say how to read them from the records)."""
    config = load_config(config_path)
    pipeline = pipeline or ScoringPipeline.from_config(config)
    served = pipeline.served(model)
    under_test = ModelUnderTest(
        name=served.name,
        version=served.version,
        bundle_digest=served.digest,
        risk_output=served.risk_output,
        thresholds=(("warning", served.cards.warning), ("critical", served.cards.critical)),
        training_metrics=served.manifest.provenance.metrics,
    )
    if labelled:
        return ValidationSetup(pipeline, under_test, None, LABELS_FROM_FILE)
    outcome = served.mapping.outcome
    if outcome is None:
        raise OutcomesError(
            "the outcomes file has no label column, and the site mapping no outcome "
            "section to read labels from the records"
        )
    labeler = record_labeler(outcome, config.resolved_limits, config.records)
    return ValidationSetup(pipeline, under_test, labeler, describe(outcome))
