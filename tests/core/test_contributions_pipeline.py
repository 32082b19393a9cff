"""Contributions through the real scoring pipeline: a gradient boosting model trained on
the demo's reference data, built from the estimator (so the bundle carries
``explain.json``), signed, installed, and asked with ``explain`` for a FHIR patient; and
the JSON every edge renders, including the answer of a model without contribution data."""

from __future__ import annotations

import base64
import csv
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from sklearn.ensemble import GradientBoostingClassifier

import agent
from agent.bundle.archive import read_bundle_dir
from agent.bundle.signing import key_id, raw_public_bytes, sign_bundle_dir
from agent.bundle.trust import TrustStore
from agent.bundle.verify import verify_bundle
from agent.config import AgentConfig
from agent.contributions import NOT_AVAILABLE, unavailable
from agent.limits import Limits
from agent.outputs.prediction_json import outcome_json
from agent.pipeline import ScoringPipeline
from agent.store import BundleStore
from agent.types import IntakePath, PatientOutcome, RecordFormat, ScoreRequest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "fixtures" / "demo"
AS_OF = datetime(2026, 3, 14, 19, 0, tzinfo=UTC)


def _demo_rows() -> tuple[np.ndarray, np.ndarray]:
    """The demo reference rows (labs median-imputed, sex as its level index) and a label
    driven by respiratory rate, SpO2 and age."""
    with (DEMO / "reference.csv").open(newline="") as handle:
        records = list(csv.DictReader(handle))
    names = list(records[0])
    columns = {n: [r[n] for r in records] for n in names}
    matrix = []
    for name in names:
        if name == "sex":
            matrix.append([float(v == "male") for v in columns[name]])
            continue
        values = np.array([float(v) if v else np.nan for v in columns[name]])
        values[np.isnan(values)] = np.nanmedian(values)
        matrix.append(values.tolist())
    x = np.array(matrix).T.astype(np.float32)
    rr, spo2, age = (x[:, names.index(n)] for n in ("respiratory_rate", "spo2", "age"))
    y = ((rr > 21) | (spo2 < 93) | (age > 85)).astype(int)
    return x, y


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> ScoringPipeline:
    tmp = tmp_path_factory.mktemp("contributions")
    x, y = _demo_rows()
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    bundle = agent.build(
        model,
        reference=DEMO / "reference.csv",
        schema=DEMO / "schema.yaml",
        name="deterioration",
        version="2.0.0",
        out=tmp / "bundle",
    )
    key = Ed25519PrivateKey.generate()
    sign_bundle_dir(bundle, key)
    public = key.public_key()
    config = AgentConfig.model_validate(
        {
            "store": {"root": str(tmp / "store")},
            "trust": {
                "keys": [
                    {
                        "id": key_id(public),
                        "public_key": base64.b64encode(raw_public_bytes(public)).decode(),
                    }
                ]
            },
            "models": [
                {"name": "deterioration", "mapping": str(REPO / "config/mappings/demo-site.yaml")}
            ],
            "http": {"enabled": False},
        }
    )
    store = BundleStore(config.store.root)
    verified = verify_bundle(
        read_bundle_dir(bundle, Limits()), TrustStore(config.trust), limits=Limits()
    )
    assert "explain.json" in verified.files
    store.install(verified)
    store.activate("deterioration", "2.0.0")
    return ScoringPipeline.from_config(config, CollectorRegistry())


def _score(pipeline: ScoringPipeline, *, explain: bool) -> PatientOutcome:
    body = (REPO / "fixtures" / "fhir" / "demo-patient-bundle.json").read_bytes()
    request = ScoreRequest(
        "deterioration",
        body,
        RecordFormat.fhir_json,
        IntakePath.http,
        as_of=AS_OF,
        explain=explain,
    )
    [outcome] = pipeline.score(request).outcomes
    return outcome


def test_explain_adds_contributions_that_add_up_to_the_served_probability(
    pipeline: ScoringPipeline,
) -> None:
    outcome = _score(pipeline, explain=True)
    assert outcome.prediction is not None
    contributions = outcome.prediction.contributions
    assert contributions is not None and not contributions.unavailable
    manifest = pipeline.model("deterioration").manifest
    assert [name for name, _ in contributions.values] == manifest.feature_names()
    assert contributions.output == "probability_1" and contributions.space == "log-odds"
    margin = contributions.base + math.fsum(v for _, v in contributions.values)
    probability = outcome.prediction.outputs["probability_1"]
    assert margin == pytest.approx(math.log(probability / (1 - probability)), abs=1e-4)
    assert any(abs(v) > 1e-3 for _, v in contributions.values)

    answer = outcome_json(outcome, explain=True)["contributions"]
    assert answer["available"] is True and answer["space"] == "log-odds"
    assert [f["feature"] for f in answer["features"]] == manifest.feature_names()
    assert answer["base"] == contributions.base


def test_without_explain_nothing_is_computed_or_rendered(pipeline: ScoringPipeline) -> None:
    outcome = _score(pipeline, explain=False)
    assert outcome.prediction is not None and outcome.prediction.contributions is None
    assert "contributions" not in outcome_json(outcome)


def test_a_model_without_contribution_data_says_so(pipeline: ScoringPipeline) -> None:
    outcome = _score(pipeline, explain=True)
    assert outcome.prediction is not None
    bare = replace(outcome, prediction=replace(outcome.prediction, contributions=unavailable()))
    assert outcome_json(bare, explain=True)["contributions"] == {
        "available": False,
        "detail": NOT_AVAILABLE,
    }


def test_a_reload_keeps_the_contributions(pipeline: ScoringPipeline) -> None:
    """SIGHUP rebinds the served bundle to the reloaded mapping: its explain.json goes with
    it (it was dropped, and every answer said contributions were unavailable)."""
    before = _score(pipeline, explain=True).prediction
    pipeline.reconfigure(pipeline.config)
    after = _score(pipeline, explain=True).prediction
    assert before is not None and after is not None
    assert after.contributions is not None and not after.contributions.unavailable
    assert after.contributions == before.contributions
