"""A manifest whose reference statistics come from samples of known distributions, and the
records that feed a monitor: what a bundle builder would produce from a training set."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from agent.bundle.manifest import (
    BundleManifest,
    FeatureKind,
    FileEntry,
    Histogram,
    InputFeature,
    OutputKind,
    OutputSpec,
    Provenance,
    ReferenceStats,
    ValueReference,
)
from agent.types import FeatureValue, FeatureVector

BINS = 10
SEXES = ["female", "male"]


@dataclass(frozen=True)
class Population:
    """The training population: temperature (Cel), heart rate (/min), age (a), sex, risk."""

    rng: np.random.Generator

    def sample(self, n: int) -> dict[str, np.ndarray]:
        return {
            "temperature": self.rng.normal(37.0, 0.6, n),
            "heart_rate": self.rng.normal(80.0, 12.0, n),
            "age": self.rng.uniform(18.0, 90.0, n),
            "sex": self.rng.choice(2, size=n, p=[0.55, 0.45]).astype(float),
            "risk": self.rng.beta(2.0, 8.0, n),
        }


def numeric_reference(values: np.ndarray, missing_rate: float = 0.0) -> ValueReference:
    """Quantile bin edges and bin fractions, the way the bundle builder computes them."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
    bins = np.searchsorted(edges, values, side="right")
    fractions = np.bincount(bins, minlength=len(edges) + 1) / len(values)
    return ValueReference(
        count=len(values),
        missing_rate=missing_rate,
        median=float(np.median(values)),
        histogram=Histogram(edges=edges.tolist(), fractions=fractions.tolist()),
    )


def build_manifest(version: str = "1.0.0", seed: int = 1) -> BundleManifest:
    reference = Population(np.random.default_rng(seed)).sample(20_000)
    sex_freq = np.bincount(reference["sex"].astype(int), minlength=2) / 20_000
    return BundleManifest(
        name="sepsis",
        version=version,
        abi_version=1,
        inputs=[
            InputFeature(name="temperature", unit="Cel", min=30, max=45),
            InputFeature(name="heart_rate", unit="/min", min=20, max=250),
            InputFeature(name="age", unit="a", min=0, max=120),
            InputFeature(name="sex", kind=FeatureKind.categorical, levels=SEXES),
        ],
        outputs=[OutputSpec(name="risk", kind=OutputKind.probability, class_label="sepsis")],
        reference=ReferenceStats(
            rows=20_000,
            features={
                "temperature": numeric_reference(reference["temperature"], 0.02),
                "heart_rate": numeric_reference(reference["heart_rate"]),
                "age": numeric_reference(reference["age"]),
                "sex": ValueReference(
                    count=20_000,
                    category_frequencies=dict(zip(SEXES, sex_freq.tolist(), strict=True)),
                ),
            },
            outputs={"risk": numeric_reference(reference["risk"])},
        ),
        provenance=Provenance(
            training_data_sha256="0" * 64, creator="tests", created=datetime(2026, 1, 1, tzinfo=UTC)
        ),
        files={"model.wasm": FileEntry(sha256="0" * 64, size=0)},
    )


def vector(row: dict[str, float | None], **flags: dict[str, bool]) -> FeatureVector:
    """A feature vector as the mapping would hand it over; ``flags`` maps a flag name
    (imputed, out_of_range, unseen_category) to the features it applies to."""
    features = tuple(
        FeatureValue(
            name=name,
            value=value,
            display=value,
            source="test",
            **{flag: names.get(name, False) for flag, names in flags.items()},
        )
        for name, value in row.items()
    )
    return FeatureVector(
        values=tuple(v if v is not None else float("nan") for v in row.values()), features=features
    )


Rows = Iterator[tuple[FeatureVector, dict[str, float]]]


def records(samples: dict[str, np.ndarray]) -> Rows:
    for i in range(len(samples["risk"])):
        row: dict[str, float | None] = {
            name: float(samples[name][i]) for name in ("temperature", "heart_rate", "age", "sex")
        }
        yield vector(row), {"risk": float(samples["risk"][i])}
