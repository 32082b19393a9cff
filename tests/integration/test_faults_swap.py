"""A model swap under a request in flight, made deterministic on the real process: an OIP
request whose body arrives in two halves, with version 1.0.1 published and swapped in
between them. The edge guard reads the whole body before the route runs, so the route takes
its model once the body is in (1.0.1 here) and answers with that model's own version and
digest: one view of the model from start to end, never one version's outputs under another's
name (it was a 404 before requests took their model once)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.agent_process import start_agent
from tests.integration.reliability_support import (
    DEMO_KEY,
    DEMO_VECTOR,
    config_path_root,
    oip_body,
    publish_to,
    reliability_root,
    served_version,
    wait_for,
    wat_bundle,
)

pytestmark = pytest.mark.integration


def test_an_oip_request_in_flight_across_a_swap_finishes_on_its_model(tmp_path: Path) -> None:
    config = reliability_root(tmp_path, edit=lambda c: c["registries"][0].update(poll_interval=1.0))
    agent = start_agent(config)
    body = json.dumps(oip_body([DEMO_VECTOR])).encode()
    release = threading.Event()
    answers: list[httpx.Response] = []

    def halves() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        release.wait(30)
        yield body[len(body) // 2 :]

    def post() -> None:
        answers.append(
            httpx.post(
                agent.base_url + "/v2/models/deterioration/infer",
                content=halves(),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
        )

    client_thread = threading.Thread(target=post)
    try:
        client_thread.start()
        time.sleep(0.5)  # the request waits for the rest of its body
        with agent.client() as client:
            before = _served(client)
        registry = config_path_root(tmp_path) / "registry"
        publish_to(registry, wat_bundle(tmp_path / "b101", "1.0.1", DEMO_KEY), DEMO_KEY)
        with agent.client() as client:
            wait_for(lambda: served_version(client) == "1.0.1", 15, "the swap to 1.0.1")
            release.set()
            client_thread.join(30)
            after = client.post("/v2/models/deterioration/infer", json=oip_body([DEMO_VECTOR]))
            swapped = _served(client)
    finally:
        release.set()
        client_thread.join(30)
        assert agent.stop() == 0, agent.log_text()
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert before[0] == "1.0.0" and swapped[0] == "1.0.1" and before[1] != swapped[1]
    assert _answered_by(answer) == swapped == _answered_by(after)
    assert answer.json()["outputs"] == after.json()["outputs"]  # same model file, re-signed


def _served(client: httpx.Client) -> tuple[str, str]:
    (model,) = client.get("/v1/models").json()["models"]
    return model["version"], model["bundle_digest"]


def _answered_by(response: httpx.Response) -> tuple[str, str]:
    body = response.json()
    return body["model_version"], body["parameters"]["bundle_digest"]
