"""The pipeline validates with the served mapping's reach: under the default validation, a
malformed value a feature reads refuses the request (a FHIRPath feature's, or a coded
Observation's); one in an Observation no feature reads does not."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.errors import FhirError
from agent.pipeline import ScoringPipeline
from agent.registry.updater import build_updater
from agent.types import IntakePath, RecordFormat, ScoreRequest
from tests.integration.agent_process import demo_root

FHIR = Path(__file__).resolve().parents[2] / "fixtures" / "fhir"
BUNDLE = FHIR / "local-site-bundle.json"
DEMO_BUNDLE = FHIR / "demo-patient-bundle.json"
AS_OF = datetime(2026, 3, 15, 12, tzinfo=UTC)  # the demo bundle's clinical "now"


@pytest.fixture(scope="module")
def local_site(tmp_path_factory: pytest.TempPathFactory) -> ScoringPipeline:
    """The demo agent serving the local-site mapping (its ``sex`` is a FHIRPath feature)."""

    def edit(config: dict[str, Any]) -> None:
        config["models"][0]["mapping"] = "mappings/local-site.yaml"

    config = load_config(demo_root(tmp_path_factory.mktemp("reach"), edit))
    pipeline = ScoringPipeline.from_config(config)
    build_updater(config, pipeline).pull_once()
    assert pipeline.ready
    return pipeline


def _request(document: dict[str, Any], as_of: datetime | None = None) -> ScoreRequest:
    return ScoreRequest(
        model="deterioration",
        body=json.dumps(document).encode(),
        format=RecordFormat.fhir_json,
        intake=IntakePath.http,
        as_of=as_of,
        caller="test",
        request_id="reach",
    )


def test_a_bad_value_only_fhirpath_reads_refuses_the_request(local_site: ScoringPipeline) -> None:
    document = json.loads(BUNDLE.read_bytes())
    assert local_site.config.records.fhir_validation == "essential"
    local_site.score(_request(document))  # valid as it is
    extension = document["entry"][0]["resource"]["extension"][0]
    extension["valueCode"] = "SECRET  W"
    with pytest.raises(FhirError) as caught:
        local_site.score(_request(document))
    assert "resource.extension[0].valueCode: value does not match" in str(caught.value)
    assert "SECRET" not in str(caught.value)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> ScoringPipeline:
    """The demo agent as shipped (demo-site.yaml: features by code only)."""
    config = load_config(demo_root(tmp_path_factory.mktemp("demo-reach")))
    pipeline = ScoringPipeline.from_config(config)
    build_updater(config, pipeline).pull_once()
    assert pipeline.ready
    return pipeline


def test_a_bad_value_a_feature_reads_refuses_the_request_one_no_feature_reads_does_not(
    demo: ScoringPipeline,
) -> None:
    document = json.loads(DEMO_BUNDLE.read_bytes())
    observation = document["entry"][1]["resource"]
    assert observation["code"]["coding"][0]["code"] == "8867-4"  # heart rate: read
    observation["valueQuantity"]["value"] = "SECRET"
    with pytest.raises(FhirError) as caught:
        demo.score(_request(document, as_of=AS_OF))
    assert "entry[1].resource.valueQuantity.value: expected a number" in str(caught.value)
    observation["code"]["coding"][0]["code"] = "8462-4"  # diastolic: no feature reads it
    [outcome] = demo.score(_request(document, as_of=AS_OF)).outcomes
    assert outcome.prediction is not None
