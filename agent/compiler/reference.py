"""Training reference statistics for a bundle: what drift is measured against and what
"impute the training median" means at a site.

Conventions (the monitor relies on them):

* ``count`` is the number of non-missing values; ``missing_rate`` = missing / rows.
* ``std`` is the population standard deviation (ddof = 0).
* Histogram edges are the distinct reference deciles (10 %, 20 %, ..., 90 %) of the
  non-missing values; a value ``v`` falls in bin ``searchsorted(edges, v, side="right")``,
  i.e. bin 0 is ``v < edges[0]``, bin i is ``edges[i-1] <= v < edges[i]`` and the last bin
  is ``v >= edges[-1]``. ``fractions`` has ``len(edges) + 1`` entries summing to 1.
* A categorical feature gets ``category_frequencies`` (level -> fraction of non-missing
  values, every level listed, zeros included) instead of moments and a histogram.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.bundle.manifest import Histogram, ValueReference

_DECILES = np.linspace(0.1, 0.9, 9)


def numeric_reference(values: np.ndarray) -> ValueReference:
    """Statistics of one numeric column; NaN marks a missing value."""
    rows = int(values.size)
    present = values[~np.isnan(values)].astype(np.float64)
    missing_rate = float((rows - present.size) / rows) if rows else 0.0
    if present.size == 0:
        return ValueReference(count=0, missing_rate=missing_rate)
    edges = np.unique(np.quantile(present, _DECILES))
    bins = np.searchsorted(edges, present, side="right")
    fractions = np.bincount(bins, minlength=edges.size + 1) / present.size
    return ValueReference(
        count=int(present.size),
        missing_rate=missing_rate,
        median=float(np.median(present)),
        mean=float(np.mean(present)),
        std=float(np.std(present)),
        min=float(np.min(present)),
        max=float(np.max(present)),
        histogram=Histogram(
            edges=[float(e) for e in edges], fractions=[float(f) for f in fractions]
        ),
    )


def categorical_reference(codes: np.ndarray, levels: Sequence[str]) -> ValueReference:
    """Statistics of a column of level indices (NaN = missing) over ``levels``."""
    rows = int(codes.size)
    present = codes[~np.isnan(codes)].astype(np.int64)
    counts = np.bincount(present, minlength=len(levels)) if present.size else np.zeros(len(levels))
    total = max(int(present.size), 1)
    return ValueReference(
        count=int(present.size),
        missing_rate=float((rows - present.size) / rows) if rows else 0.0,
        category_frequencies={level: float(counts[i] / total) for i, level in enumerate(levels)},
    )
