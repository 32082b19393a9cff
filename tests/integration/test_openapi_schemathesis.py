"""schemathesis against the OpenAPI document the real agent serves: no request it can make
from that document may get a 5xx (other than the 503s the document declares for "not
ready", which a loaded agent does not give).

Two bounded passes with the schemathesis CLI (a subprocess, so its own warnings and
threads stay out of this test run): one with generated path parameters (mostly unknown
models and services: the 404 paths), one with the served model, version and CDS service
pinned (the scoring paths). Fixed seeds keep a failure reproducible; set
``EDGE_AGENT_SCHEMATHESIS_EXAMPLES`` for a deeper run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent_process import AgentProcess, start_agent
from tests.integration.reliability_support import reliability_root

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = int(os.environ.get("EDGE_AGENT_SCHEMATHESIS_EXAMPLES", "25"))
PINNED = """
[parameters]
"path.name" = "deterioration"
"path.version" = "1.0.0"
"path.id" = "deterioration-risk"
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(reliability_root(tmp_path_factory.mktemp("schemathesis")))
    yield process
    assert process.stop() == 0, process.log_text()


def _schemathesis(agent: AgentProcess, folder: Path, examples: int, config: str) -> None:
    config_file = folder / "schemathesis.toml"
    config_file.write_text(config)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config_file),
        "--no-color",
        "run",
        f"{agent.base_url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(examples),
        "--seed",
        "20260315",
        "--workers",
        "1",  # hypothesis describes filters by parsing source: CPython 3.11's ast is not
        # thread-safe there ("AST constructor recursion depth mismatch" with 2 workers)
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
    ]
    result = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    print("schemathesis:", *re.findall(r"\d+ generated, .*", result.stdout))
    assert agent.process.poll() is None


def test_generated_paths_get_no_server_error(agent: AgentProcess, tmp_path: Path) -> None:
    _schemathesis(agent, tmp_path, max(EXAMPLES // 3, 5), "")


def test_served_model_paths_get_no_server_error(agent: AgentProcess, tmp_path: Path) -> None:
    _schemathesis(agent, tmp_path, EXAMPLES, PINNED)
    with agent.client() as client:
        assert client.get("/readyz").status_code == 200


def test_what_schemathesis_found_stays_fixed(agent: AgentProcess) -> None:
    """Its first runs found these two 5xx (fixed in agent/intake/oip.py)."""
    odd_tensor = {"inputs": [{"name": "", "shape": [], "datatype": {}, "data": [None, None]}]}
    with agent.client() as client:
        infer = client.post("/v2/models/deterioration/infer", json=odd_tensor)
        unknown_ready = client.get("/v2/models/0/versions/0/ready")
        wrong_version = client.get("/v2/models/deterioration/versions/9.9.9/ready")
    assert infer.status_code == 400 and "error" in infer.json()
    assert unknown_ready.status_code == 404 and unknown_ready.json()["ready"] is False
    assert wrong_version.status_code == 404
