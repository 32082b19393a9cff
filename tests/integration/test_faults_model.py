"""A hostile but validly signed model on the real `edge-agent serve` process.

The module follows the ABI (docs/abi.md) with the demo's schema, but traps (unreachable)
when the heart rate is above 200 and loops forever when it is below 25. It is signed with
a key the test's config trusts and published to a file registry. A request that hits the
trap or the deadline fails alone, with an OperationOutcome; the next one succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.bundle.signing import generate_keypair
from tests.integration.agent_process import AgentProcess, start_agent
from tests.integration.reliability_support import (
    DEMO_VECTOR,
    FHIR,
    PATIENT_BUNDLE,
    PREDICT,
    metric,
    oip_body,
    publish_to,
    reliability_root,
    trusted_key_entry,
    wat_bundle,
)

pytestmark = pytest.mark.integration

# 9 features in, 3 outputs (label, probability_0, probability_1) out, as the demo manifest.
HOSTILE_WAT = """
(module
  (memory (export "memory") 1 1)
  (func (export "edge_abi_version") (result i32) (i32.const 1))
  (func (export "edge_n_features") (result i32) (i32.const 9))
  (func (export "edge_n_outputs") (result i32) (i32.const 3))
  (func (export "edge_max_batch") (result i32) (i32.const 64))
  (func (export "edge_input_ptr") (result i32) (i32.const 1024))
  (func (export "edge_output_ptr") (result i32) (i32.const 4096))
  (func (export "edge_predict") (param $n i32) (result i32) (local $r i32) (local $hr f32)
    (if (i32.gt_u (local.get $n) (i32.const 64)) (then (return (i32.const 1))))
    (block $done (loop $rows
      (br_if $done (i32.ge_u (local.get $r) (local.get $n)))
      (local.set $hr (f32.load offset=1024 (i32.mul (local.get $r) (i32.const 36))))
      (if (f32.gt (local.get $hr) (f32.const 200)) (then unreachable))
      (if (f32.lt (local.get $hr) (f32.const 25)) (then (loop $forever (br $forever))))
      (f32.store offset=4096 (i32.mul (local.get $r) (i32.const 12)) (f32.const 0))
      (f32.store offset=4100 (i32.mul (local.get $r) (i32.const 12)) (f32.const 0.75))
      (f32.store offset=4104 (i32.mul (local.get $r) (i32.const 12)) (f32.const 0.25))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rows)))
    (i32.const 0)))
"""


def _with_heart_rate(value: float) -> bytes:
    bundle = json.loads(PATIENT_BUNDLE)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation" and any(
            c.get("code") == "8867-4" for c in resource["code"]["coding"]
        ):
            resource["valueQuantity"]["value"] = value
    return json.dumps(bundle).encode()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    private, public = generate_keypair(tmp_path / "keys", "hostile-publisher")
    registry = tmp_path / "hostile-registry"
    publish_to(registry, wat_bundle(tmp_path / "hostile", "1.0.0", private, HOSTILE_WAT), private)

    def hostile(config: dict[str, Any]) -> None:
        config["trust"]["keys"] = [trusted_key_entry(private, public)]
        config["registries"][0]["url"] = registry.as_uri()

    process = start_agent(reliability_root(tmp_path, edit=hostile))
    yield process
    assert process.stop() == 0, process.log_text()


def test_trap_and_deadline_fail_one_request_each_and_the_next_succeeds(
    agent: AgentProcess,
) -> None:
    with agent.client() as client:
        outcomes = []
        for heart_rate, expected in ((230.0, 500), (92.0, 200), (22.0, 503), (92.0, 200)):
            response = client.post(PREDICT, content=_with_heart_rate(heart_rate), headers=FHIR)
            assert response.status_code == expected, response.text
            outcomes.append(response.json())
        trap, ok, deadline, again = outcomes
        oip_trap = client.post(
            "/v2/models/deterioration/infer", json=oip_body([[230.0, *DEMO_VECTOR[1:]]])
        )
        oip_ok = client.post("/v2/models/deterioration/infer", json=oip_body([DEMO_VECTOR]))
        text = client.get("/metrics").text
    for failure, reason in ((trap, "model_trap"), (deadline, "deadline")):
        assert failure["resourceType"] == "OperationOutcome"
        assert failure["issue"][0]["details"]["text"] == reason
        assert "230" not in failure["issue"][0]["diagnostics"]
    assert ok["predictions"][0]["outputs"]["probability_1"] == pytest.approx(0.25)
    assert again["predictions"][0]["outputs"] == ok["predictions"][0]["outputs"]
    assert oip_trap.status_code == 500 and "error" in oip_trap.json()
    assert oip_ok.status_code == 200
    assert metric(text, "edge_agent_errors_total", reason="model_trap") == 2
    assert metric(text, "edge_agent_errors_total", reason="deadline") == 1
    assert agent.process.poll() is None
