"""A bundle is activated only after its module has run once, on the real `edge-agent serve`
process: a validly signed bundle whose module does not match its manifest is refused and
the old version serves on; and the compiled-module cache serves only what the agent itself
compiled from the signed module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import wasmtime

from agent.bundle.manifest import MODEL_FILE
from agent.runtime.cache import ModuleCache, cache_path, load_or_compile
from agent.runtime.engine import shared_engine
from tests.integration.agent_process import start_agent
from tests.integration.reliability_support import (
    DEMO_BUNDLE,
    DEMO_KEY,
    FHIR,
    PATIENT_BUNDLE,
    PREDICT,
    config_path_root,
    metric,
    publish_to,
    reliability_root,
    served_version,
    wait_for,
    wat_bundle,
)

pytestmark = pytest.mark.integration

# A conforming module for the demo manifest's 9 features, answering OUTPUTS constants per
# row (label, probability_0, probability_1 when OUTPUTS is 3). BODY runs first per call.
WAT = """
(module
  (memory (export "memory") 1 1)
  (func (export "edge_abi_version") (result i32) (i32.const 1))
  (func (export "edge_n_features") (result i32) (i32.const 9))
  (func (export "edge_n_outputs") (result i32) (i32.const OUTPUTS))
  (func (export "edge_max_batch") (result i32) (i32.const 64))
  (func (export "edge_input_ptr") (result i32) (i32.const 1024))
  (func (export "edge_output_ptr") (result i32) (i32.const 4096))
  (func (export "edge_predict") (param $n i32) (result i32) (local $r i32)
    BODY
    (block $done (loop $rows
      (br_if $done (i32.ge_u (local.get $r) (local.get $n)))
      (f32.store offset=4096 (i32.mul (local.get $r) (i32.const 12)) (f32.const 0))
      (f32.store offset=4100 (i32.mul (local.get $r) (i32.const 12)) (f32.const 0.75))
      (f32.store offset=4104 (i32.mul (local.get $r) (i32.const 12)) (f32.const 0.25))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rows)))
    (i32.const 0)))
"""


def _module(outputs: int = 3, body: str = "") -> str:
    return WAT.replace("OUTPUTS", str(outputs)).replace("BODY", body)


def _quick_polls(config: dict[str, Any]) -> None:
    config["registries"][0].update(poll_interval=1.0, backoff_max=2.0, retries=0)


def _refusals(client: httpx.Client) -> float:
    return metric(
        client.get("/metrics").text,
        "edge_agent_bundle_verification_failures_total",
        reason="module_mismatch",
    ) + metric(
        client.get("/metrics").text,
        "edge_agent_bundle_pull_failures_total",
        reason="module_mismatch",
    )


@pytest.mark.parametrize(
    "wat",
    [
        _module(outputs=2),  # two outputs where the manifest declares three
        _module(body="unreachable"),  # traps on every row
        _module().replace("(f32.const 0.25)", "(f32.const nan)"),  # no finite answer
    ],
    ids=["outputs-count", "traps", "nan"],
)
def test_a_signed_bundle_whose_module_does_not_match_is_refused(tmp_path: Path, wat: str) -> None:
    agent = start_agent(reliability_root(tmp_path, edit=_quick_polls))
    try:
        with agent.client() as client:
            assert served_version(client) == "1.0.0"
            registry = config_path_root(tmp_path) / "registry"
            publish_to(registry, wat_bundle(tmp_path / "b101", "1.0.1", DEMO_KEY, wat), DEMO_KEY)
            wait_for(lambda: _refusals(client) >= 1, 15, "the mismatching module refused")
            assert served_version(client) == "1.0.0"
            assert client.get("/readyz").status_code == 200
            assert client.post(PREDICT, content=PATIENT_BUNDLE, headers=FHIR).status_code == 200
    finally:
        assert agent.stop() == 0, agent.log_text()


def _probability(client: httpx.Client) -> float:
    response = client.post(PREDICT, content=PATIENT_BUNDLE, headers=FHIR)
    assert response.status_code == 200, response.text
    value: float = response.json()["predictions"][0]["outputs"]["probability_1"]
    return value


def test_a_planted_cache_entry_is_not_served_and_a_loose_cache_folder_is_not_used(
    tmp_path: Path,
) -> None:
    config_path = reliability_root(tmp_path)
    store = config_path_root(tmp_path) / "var/demo/store"
    agent = start_agent(config_path)
    try:
        with agent.client() as client:
            signed = _probability(client)
    finally:
        assert agent.stop() == 0, agent.log_text()

    # another module, compiled by the agent's own code into the cache's own format, put
    # in place of the signed module's entry (what someone able to write there could do)
    other = bytes(wasmtime.wat2wasm(_module()))
    elsewhere = ModuleCache(tmp_path / "other/cache", tmp_path / "other/digests")
    load_or_compile(shared_engine(), other, elsewhere)
    demo_wasm = (DEMO_BUNDLE / MODEL_FILE).read_bytes()
    target = cache_path(ModuleCache(store / "cache", store / "state/compiled"), demo_wasm)
    assert target.is_file()
    target.write_bytes(cache_path(elsewhere, other).read_bytes())

    agent = start_agent(config_path)
    try:
        with agent.client() as client:
            assert _probability(client) == signed != 0.25
    finally:
        assert agent.stop() == 0, agent.log_text()

    (store / "cache").chmod(0o777)
    agent = start_agent(config_path)
    try:
        with agent.client() as client:
            assert _probability(client) == signed
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert "compiled-module cache not used" in agent.log_text()
