"""Shared pieces of the reliability tests (faults, lifecycle, load) on the real process.

Builds on ``agent_process`` (the demo config copied to a temporary folder): every agent
here gets its own free HTTP and MLLP ports, a registry folder the test owns (a copy of the
demo registry, so publishing never touches fixtures/), and a quick drop folder. Bundles
are real: the demo manifest with another version, or with a hand-written WAT module, signed
with a real key and published with the agent's own ``publish``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import wasmtime

from agent.bundle.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE, canonical_json
from agent.bundle.signing import key_id, load_private_key, sign_bundle_dir
from agent.registry.publish import publish
from tests.integration.agent_process import REPO, demo_root, free_port

DEMO_BUNDLE = REPO / "fixtures/demo/build/deterioration"
DEMO_KEY = REPO / "fixtures/keys/demo-publisher.key"
AS_OF = "2026-03-15T12:00:00Z"  # the clinical time of the demo fixtures
PREDICT = f"/v1/models/deterioration/predict?as_of={AS_OF}"
FHIR = {"Content-Type": "application/fhir+json"}
HL7 = {"Content-Type": "x-application/hl7-v2+er7"}
PATIENT_BUNDLE = (REPO / "fixtures/fhir/demo-patient-bundle.json").read_bytes()
VITALS_ONLY = (REPO / "fixtures/fhir/vitals-only-bundle.json").read_bytes()
ORU = (REPO / "fixtures/hl7/oru-r01-v25.hl7").read_bytes()
# One demo feature vector in manifest order (sex as the level index), for OIP requests.
DEMO_VECTOR = [92.0, 22.0, 38.1, 105.0, 93.0, 11.0, 95.0, 71.0, 1.0]


def recent_oru() -> bytes:
    """The demo ORU^R01 moved from its clinical time to now, for the intake paths that
    score as of the current time (drop folder, MLLP): the mapping's look-back windows
    would otherwise find no vitals."""
    shift = datetime.now(UTC) - datetime.fromisoformat(AS_OF)

    def moved(match: re.Match[bytes]) -> bytes:
        when = datetime.strptime(match[0].decode(), "%Y%m%d%H%M%S%z") + shift
        return when.strftime("%Y%m%d%H%M%S+0000").encode()

    return re.sub(rb"20\d{12}[+-]\d{4}", moved, ORU)


def oip_body(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": [value for row in rows for value in row],
            }
        ]
    }


def reliability_root(tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The demo config in ``tmp_path`` with free ports, its own copy of the demo registry
    (``<root>/registry``), a drop folder that takes files at once, and ``edit`` applied
    last. Returns the config path."""

    def adjust(config: dict[str, Any]) -> None:
        registry = config_path_root(tmp_path) / "registry"
        shutil.copytree(REPO / "fixtures/registry", registry)
        config["registries"][0]["url"] = registry.as_uri()
        config["mllp"]["port"] = free_port()
        config["drop_folder"].update(settle_seconds=0.2, poll_interval=0.5)
        config["limits"] = {"drain_timeout": 5.0}
        if edit is not None:
            edit(config)

    return demo_root(tmp_path, edit=adjust)


def config_path_root(tmp_path: Path) -> Path:
    """The folder ``demo_root`` lays the demo out in (config/, fixtures link, var/)."""
    return tmp_path / "demo"


def wat_bundle(dest: Path, version: str, key_path: Path, wat: str | None = None) -> Path:
    """A copy of the demo bundle as ``version`` (its model.wasm replaced by the module
    ``wat`` compiles to, when given), manifest rewritten canonically and signed with
    ``key_path``. The digests in the manifest are recomputed, so the bundle is valid."""
    dest.mkdir(parents=True)
    manifest = json.loads((DEMO_BUNDLE / MANIFEST_FILE).read_bytes())
    model = (DEMO_BUNDLE / MODEL_FILE).read_bytes() if wat is None else wasmtime.wat2wasm(wat)
    manifest["version"] = version
    manifest["files"] = {
        MODEL_FILE: {"sha256": hashlib.sha256(model).hexdigest(), "size": len(model)}
    }
    (dest / MODEL_FILE).write_bytes(model)
    (dest / MANIFEST_FILE).write_bytes(canonical_json(manifest))
    (dest / SIGNATURE_FILE).unlink(missing_ok=True)
    sign_bundle_dir(dest, load_private_key(key_path))
    return dest


def publish_to(registry: Path, bundle: Path, key_path: Path) -> None:
    """Publish ``bundle`` to the file registry folder ``registry`` (index re-signed)."""
    publish(bundle, registry.as_uri(), load_private_key(key_path))


def trusted_key_entry(key_path: Path, public_path: Path) -> dict[str, str]:
    """A ``trust.keys`` config entry for a key pair made by ``generate_keypair``."""
    return {
        "id": key_id(load_private_key(key_path).public_key()),
        "public_key_file": str(public_path),
        "comment": "test key",
    }


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0.0 if none)."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
    return total


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``condition`` until true; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def served_version(client: httpx.Client) -> str | None:
    models = client.get("/v1/models").json()["models"]
    return next((m["version"] for m in models if m["name"] == "deterioration"), None)


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``, e.g. "3m") at ``mountpoint``, to fill up;
    the calling test is skipped where mounting is not allowed (needs root)."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mountpoint.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a file into ``folder`` that leaves ``leave`` bytes free on its filesystem."""
    stats = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")
