"""``SiteMapping``: a site's mapping, checked against one model and compiled, ready to turn
records into that model's feature vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agent.errors import RecordError, TooMuchImputed, UnmappableRecord
from agent.mapping.facts import FactIndex, WantedCodes
from agent.mapping.feature import CompiledFeature, FeatureSurvey
from agent.mapping.outcome import CompiledOutcome
from agent.types import ElementReach, FeatureValue, FeatureVector, PatientRecord

Read = tuple[FeatureValue, str | None]  # one feature's value and its warning, if any


@dataclass(frozen=True)
class SiteMapping:
    """A loaded mapping (see ``load_mapping``). Immutable and safe to share across threads."""

    path: Path
    site: str
    model: str
    features: tuple[CompiledFeature, ...]  # in the model's input order
    wanted_codes: WantedCodes  # every code any feature reads: all the index needs
    max_imputed: int  # imputed features a patient may have before it is refused
    outcome: CompiledOutcome | None = None  # the ``outcome:`` section, for validation only
    reach: ElementReach = field(default_factory=ElementReach)  # what FHIRPath can read

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def extract(self, record: PatientRecord, as_of: datetime) -> FeatureVector:
        """The model's input vector for ``record`` as at ``as_of`` (a naive time is UTC).

        Look-back windows end at ``as_of``; values after it are ignored. Raises an
        UnmappableRecord subclass (missing, out_of_range, unit, unseen_category,
        too_much_imputed) naming every feature concerned (``; ``-joined, in the model's
        order), so a sender learns all it must fix at once; ``feature`` is the first.
        Warnings name features only.
        """
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        index = FactIndex(record.observations, self.wanted_codes)
        return self._vector(lambda feature, _: feature.extract(record, index, as_of))

    def read(self, row: Sequence[float]) -> FeatureVector:
        """An already-extracted row in the model's input order (an OIP tensor row, a
        feature CSV row, in the model's units and level indexes; NaN is missing) under the
        same rules as a record: each feature's ``missing``, ``unseen`` and plausible range
        (``CompiledFeature.read``), then the imputation budget. Raises as ``extract``."""
        if len(row) != len(self.features):
            raise RecordError(f"a row needs {len(self.features)} values, one per feature")
        return self._vector(lambda feature, at: feature.read(float(row[at])))

    def _vector(self, read: Callable[[CompiledFeature, int], Read]) -> FeatureVector:
        """Each feature's value (``read`` given the feature and its position), every
        refusal named at once, then the imputation budget (``max_imputed``)."""
        values = []
        numbers = []  # what the model is fed: a missing value (None) as 0.0
        warnings = []
        refusals: list[UnmappableRecord] = []
        for at, feature in enumerate(self.features):
            try:
                value, warning = read(feature, at)
            except UnmappableRecord as exc:
                refusals.append(exc)
                continue
            values.append(value)
            numbers.append(0.0 if value.value is None else value.value)
            if warning is not None:
                warnings.append(warning)
        if refusals:
            first = refusals[0]
            raise type(first)("; ".join(str(r) for r in refusals), first.feature)
        imputed = [v.name for v in values if v.imputed]
        if len(imputed) > self.max_imputed:
            raise TooMuchImputed(
                f"{len(imputed)} of {len(values)} features would be imputed "
                f"({', '.join(imputed)}); the model allows {self.max_imputed}",
                imputed[0],
            )
        return FeatureVector(
            values=tuple(numbers), features=tuple(values), warnings=tuple(warnings)
        )

    def survey(self, record: PatientRecord, as_of: datetime) -> list[FeatureSurvey]:
        """Each feature of ``record`` as ``CompiledFeature.survey`` sees it (a naive time
        is UTC); never raises for the record's content."""
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        index = FactIndex(record.observations, self.wanted_codes)
        return [feature.survey(record, index, as_of) for feature in self.features]
