"""An already-extracted feature row (OIP, feature CSVs) as the monitor sees a mapped record,
so raw vectors drift, and count missing, out-of-range and unseen values, like records do."""

from __future__ import annotations

import math
from collections.abc import Sequence

from agent.bundle.manifest import BundleManifest, FeatureKind
from agent.types import FeatureValue, FeatureVector


def raw_vector(manifest: BundleManifest, row: Sequence[float]) -> FeatureVector:
    """An already-extracted row as a ``FeatureVector`` for the monitor: NaN is missing,
    values outside the manifest's range and category indexes it does not know are
    flagged, as the mapping flags them for records."""
    features = []
    for spec, value in zip(manifest.inputs, row, strict=True):
        number = float(value)
        missing = math.isnan(number)
        unseen = (
            spec.kind is FeatureKind.categorical
            and not missing
            and (not number.is_integer() or not 0 <= number < len(spec.levels))
        )
        out_of_range = not missing and (
            (spec.min is not None and number < spec.min)
            or (spec.max is not None and number > spec.max)
        )
        features.append(
            FeatureValue(
                name=spec.name,
                value=None if missing else number,
                display=None if missing else number,
                source="feature vector",
                unit=spec.unit,
                out_of_range=out_of_range,
                unseen_category=unseen,
            )
        )
    return FeatureVector(values=tuple(float(v) for v in row), features=tuple(features))
