"""What a batch can be asked to publish. A leaf: the drop folder's config and the CLI name
output kinds without importing the batch engine."""

from __future__ import annotations

from enum import StrEnum


class OutputKind(StrEnum):
    """The output files a batch can publish (the run report is always written)."""

    ndjson = "ndjson"  # <stem>.results.ndjson: one line per input record
    csv = "csv"  # <stem>.results.csv: one row per prediction or failed record
    fhir = "fhir"  # <stem>.riskassessment.ndjson: a FHIR RiskAssessment per prediction
