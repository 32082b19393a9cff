"""What the fuzzers feed: one function per target, bytes in, and their seed inputs.

A target may raise the agent's own typed errors (``agent.errors.AgentError``): that is a
clean refusal. Anything else escaping it (IndexError, TypeError, RecursionError, a
third-party parser's own exception...) is a crash: a bug to fix, since on the real process
it would be a 500 or a failed drop-folder record with reason ``internal``.

Used by ``harness.py`` (atheris) and importable without atheris, so a crash file can be
replayed with plain Python: ``python fuzz/replay.py TARGET FILE``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message

from agent.bundle.archive import read_bundle_archive_bytes, read_bundle_dir
from agent.bundle.manifest import BundleManifest
from agent.bundle.signing import key_id, load_public_key, parse_signature
from agent.bundle.trust import TrustStore
from agent.bundle.verify import parse_manifest, verify_bundle
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.intake.http.app import create_app
from agent.intake.http.cds_hooks import service_id
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.pipeline import ScoringPipeline
from agent.records import parse_records
from agent.registry.index import parse_index
from agent.store import BundleStore
from agent.types import RecordFormat

REPO = Path(__file__).resolve().parents[1]
LIMITS = Limits()
AS_OF = datetime(2026, 3, 15, 12, tzinfo=UTC)  # the demo fixtures' clinical time
DEMO_ARCHIVE = REPO / "fixtures/registry/bundles/deterioration/deterioration-1.0.0.tar.gz"
DEMO_KEY = REPO / "fixtures/keys/demo-publisher.pub"
MODEL = "deterioration"
OIP_PATH = f"/v2/models/{MODEL}/infer"
CDS_PATH = f"/cds-services/{service_id(MODEL)}"
# The mapping target's first byte picks the format of the rest.
_FORMATS = (RecordFormat.fhir_json, RecordFormat.fhir_ndjson, RecordFormat.hl7v2)


@cache
def _demo_manifest() -> BundleManifest:
    return parse_manifest((REPO / "fixtures/demo/build/deterioration/manifest.json").read_bytes())


@cache
def _demo_mapping() -> SiteMapping:
    return load_mapping(REPO / "config/mappings/demo-site.yaml", _demo_manifest())


@cache
def _demo_trust() -> TrustStore:
    return TrustStore.of(load_public_key(DEMO_KEY))


def hl7(data: bytes) -> None:
    parse_records(data, RecordFormat.hl7v2, limits=LIMITS)


def fhir_json(data: bytes) -> None:
    parse_records(data, RecordFormat.fhir_json, limits=LIMITS)


def fhir_ndjson(data: bytes) -> None:
    parse_records(data, RecordFormat.fhir_ndjson, limits=LIMITS)


def mapping(data: bytes) -> None:
    """Parse (format chosen by the first byte), then extract every record with the demo
    site mapping, as the pipeline does."""
    if not data:
        return
    records = parse_records(data[1:], _FORMATS[data[0] % len(_FORMATS)], limits=LIMITS)
    for record in records:
        _demo_mapping().extract(record, AS_OF)


def bundle(data: bytes) -> None:
    """A registry download: unpack the .tar.gz, then verify it against the demo key."""
    verify_bundle(read_bundle_archive_bytes(data, LIMITS), _demo_trust(), limits=LIMITS)


def bundle_tar(data: bytes) -> None:
    """As ``bundle``, with the fuzzer mutating the tar stream itself (gzip is applied
    here: mutated gzip bytes mostly stop at the CRC and never reach tar parsing)."""
    bundle(gzip.compress(data, mtime=0))


def signature(data: bytes) -> None:
    """A detached signature document (manifest.sig, index.json.sig): the one registry
    file that nothing signs, so its parser sees attacker bytes first."""
    parse_signature(data)


def documents(data: bytes) -> None:
    """The manifest and index parsers (behind a signature at pull time, but ``bundle
    inspect`` and ``publish`` read them unverified)."""
    for parse in (parse_manifest, parse_index):
        try:
            parse(data)
        except AgentError:
            continue


@cache
def _demo_app() -> tuple[ASGIApp, asyncio.AbstractEventLoop]:
    """The agent's real ASGI app (guard, routes, error rendering) over a real pipeline
    serving the demo bundle from a store in a temporary folder, and the loop it runs on."""
    root = Path(tempfile.mkdtemp(prefix="edge-agent-fuzz-"))
    config = AgentConfig.model_validate(
        {
            "store": {"root": str(root / "store")},
            "trust": {
                "keys": [
                    {
                        "id": key_id(load_public_key(DEMO_KEY)),
                        "public_key_file": str(DEMO_KEY),
                    }
                ]
            },
            "models": [{"name": MODEL, "mapping": str(REPO / "config/mappings/demo-site.yaml")}],
        }
    )
    verified = verify_bundle(
        read_bundle_dir(REPO / "fixtures/demo/build" / MODEL, LIMITS), _demo_trust(), limits=LIMITS
    )
    store = BundleStore(config.store.root)
    store.install(verified)
    store.activate(MODEL, verified.manifest.version)
    pipeline = ScoringPipeline.from_config(config)
    return create_app(pipeline, config.http, CollectorRegistry()), asyncio.new_event_loop()


def _post(path: str, body: bytes) -> None:
    """POST ``body`` to ``path`` through the whole app, as uvicorn would hand it over; an
    exception escaping the app or a 500 answer is a crash (the app renders every refusal
    as a 4xx; a 500 means an unexpected error inside)."""
    app, loop = _demo_app()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    loop.run_until_complete(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    if status >= 500:
        raise AssertionError(f"HTTP {status} from {path}")


def oip(data: bytes) -> None:
    """An Open Inference Protocol infer body, through the guard, the route and scoring."""
    _post(OIP_PATH, data)


def cds_hooks(data: bytes) -> None:
    """A CDS Hooks service call (its prefetch scored as FHIR), through the whole app."""
    _post(CDS_PATH, data)


def _oip_seeds() -> list[bytes]:
    manifest = _demo_manifest()
    row = manifest.reference_row()
    tensor = {"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}
    per_feature = [
        {"name": f.name, "shape": [1], "datatype": "FP64", "data": [value]}
        for f, value in zip(manifest.inputs, row, strict=True)
    ]
    return [
        json.dumps({"id": "a", "inputs": [tensor]}).encode(),
        json.dumps({"inputs": per_feature, "outputs": [{"name": "probability_1"}]}).encode(),
    ]


def _cds_seeds() -> list[bytes]:
    """A patient-view call whose prefetch holds the demo patient, observations moved to an
    hour ago (CDS Hooks scores as of now: older ones fall out of the look-back windows)."""
    bundle = json.loads((REPO / "fixtures/fhir/demo-patient-bundle.json").read_bytes())
    resources = [e["resource"] for e in bundle["entry"]]
    recent = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    for resource in resources:
        if "effectiveDateTime" in resource:
            resource["effectiveDateTime"] = recent
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    observations = [r for r in resources if r["resourceType"] != "Patient"]
    call = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": patient["id"]},
        "prefetch": {
            "patient": patient,
            "observations": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in observations],
            },
        },
    }
    return [json.dumps(call).encode()]


@dataclass(frozen=True)
class Target:
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


def _files(*patterns: str) -> Callable[[], list[bytes]]:
    def read() -> list[bytes]:
        return [p.read_bytes() for pattern in patterns for p in sorted(REPO.glob(pattern))]

    return read


def _mapping_seeds() -> list[bytes]:
    json_seeds = [bytes([0]) + s for s in _files("fixtures/fhir/*.json")()]
    ndjson_seeds = [bytes([1]) + s for s in _files("fixtures/fhir/*.ndjson")()]
    hl7_seeds = [bytes([2]) + s for s in _files("fixtures/hl7/*.hl7")()]
    return json_seeds + ndjson_seeds + hl7_seeds


TARGETS: dict[str, Target] = {
    "hl7": Target(hl7, _files("fixtures/hl7/*.hl7")),
    "fhir_json": Target(fhir_json, _files("fixtures/fhir/*.json")),
    "fhir_ndjson": Target(fhir_ndjson, _files("fixtures/fhir/*.ndjson")),
    "mapping": Target(mapping, _mapping_seeds),
    "signature": Target(
        signature, _files("fixtures/registry/*.sig", "fixtures/demo/build/*/*.sig")
    ),
    "documents": Target(
        documents, _files("fixtures/registry/index.json", "fixtures/demo/build/*/manifest.json")
    ),
    "bundle": Target(bundle, lambda: [DEMO_ARCHIVE.read_bytes()]),
    "bundle_tar": Target(bundle_tar, lambda: [gzip.decompress(DEMO_ARCHIVE.read_bytes())]),
    "oip": Target(oip, _oip_seeds),
    "cds_hooks": Target(cds_hooks, _cds_seeds),
}
