"""The pipeline validates with the served mapping's FHIRPath reach: under the default
validation, a malformed value only a FHIRPath feature reads refuses the request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.errors import FhirError
from agent.pipeline import ScoringPipeline
from agent.registry.updater import build_updater
from agent.types import IntakePath, RecordFormat, ScoreRequest
from tests.integration.agent_process import demo_root

BUNDLE = Path(__file__).resolve().parents[2] / "fixtures" / "fhir" / "local-site-bundle.json"


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


def _request(document: dict[str, Any]) -> ScoreRequest:
    return ScoreRequest(
        model="deterioration",
        body=json.dumps(document).encode(),
        format=RecordFormat.fhir_json,
        intake=IntakePath.http,
        as_of=None,
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
