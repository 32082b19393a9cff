"""How the Open Inference Protocol answers rows the data plane refused, in process through
the ASGI app: every row scored is 200 with the output tensors; any row refused is the
protocol's error body with no tensor (a NaN in an FP64 tensor compares false with every
threshold and would read as low risk), naming each refused row, its reason, feature and
detail; 422, or the model's own status when every refusal is its fault. The real process
answers the same (tests/integration/test_outcomes_every_path.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agent.intake.http.app import create_app
from agent.intake.http.config import HttpConfig
from agent.types import Refusal
from tests.support.plane import ScriptedPlane

pytestmark = pytest.mark.anyio
INFER = "/v2/models/demo/infer"
TRAP = Refusal("model_trap", "the model trapped on this row")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Plane(ScriptedPlane):
    """risk = the row's sum; NaN refused ``missing`` naming its feature, a negative first
    value refused as a trap."""

    def predict_rows(
        self, rows: Sequence[Sequence[float]]
    ) -> Sequence[Mapping[str, float] | Refusal]:
        results: list[Mapping[str, float] | Refusal] = []
        for row in rows:
            absent = [n for n, v in zip(self.features, row, strict=True) if math.isnan(v)]
            if absent:
                detail = (
                    f"feature {absent[0]!r}: no value in the record and the mapping says refuse"
                )
                results.append(Refusal("missing", detail, absent[0]))
            elif row[0] < 0:
                results.append(TRAP)
            else:
                results.append({"risk": sum(row)})
        return results


async def _infer(rows: list[list[float | None]]) -> httpx.Response:
    app = create_app(Plane(), HttpConfig, CollectorRegistry())
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    body: dict[str, Any] = {
        "id": "r-1",
        "inputs": [
            {
                "name": "input",
                "shape": [len(rows), 2],
                "datatype": "FP64",
                "data": [v for row in rows for v in row],
            }
        ],
    }
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post(INFER, json=body)


async def test_every_row_scored_is_200_with_the_tensors() -> None:
    response = await _infer([[1.0, 2.0], [3.0, 4.0]])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outputs"] == [
        {"name": "risk", "shape": [2], "datatype": "FP64", "data": [3.0, 7.0]}
    ]
    assert answer["id"] == "r-1" and answer["model_version"] == "1.0.0"


async def test_a_refused_row_refuses_the_request_naming_each_row() -> None:
    response = await _infer([[1.0, 2.0], [3.0, None], [None, 5.0]])
    assert response.status_code == 422, response.text
    answer = response.json()
    assert "outputs" not in answer
    assert answer["error"] == (
        "2 of 3 rows not scored; row 1: feature 'temp': no value in the record and the "
        "mapping says refuse"
    )
    assert answer["reason"] == "missing" and answer["model_version"] == "1.0.0"
    assert answer["parameters"] == {"bundle_digest": "0" * 64}
    assert [(r["row"], r["reason"], r["feature"]) for r in answer["refusals"]] == [
        (1, "missing", "temp"),
        (2, "missing", "hr"),
    ]


async def test_rows_refused_only_for_the_models_sake_answer_its_status() -> None:
    trapped = await _infer([[-1.0, 2.0], [1.0, 2.0]])
    assert trapped.status_code == 500, trapped.text  # the agent's failure, not the sender's
    assert trapped.json()["refusals"] == [{"row": 0, "reason": "model_trap", "detail": TRAP.detail}]
    mixed = await _infer([[-1.0, 2.0], [1.0, None]])
    assert mixed.status_code == 422
