"""What the fuzzers feed: one function per target, bytes in, and their seed inputs.

A target may raise the agent's own typed errors (``agent.errors.AgentError``): that is a
clean refusal. Anything else escaping it (IndexError, TypeError, RecursionError, a
third-party parser's own exception...) is a crash: a bug to fix, since on the real process
it would be a 500 or a failed drop-folder record with reason ``internal``.

Used by ``harness.py`` (atheris) and importable without atheris, so a crash file can be
replayed with plain Python: ``python fuzz/replay.py TARGET FILE``.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from agent.bundle.archive import read_bundle_archive_bytes
from agent.bundle.manifest import BundleManifest
from agent.bundle.signing import load_public_key, parse_signature
from agent.bundle.trust import TrustStore
from agent.bundle.verify import parse_manifest, verify_bundle
from agent.errors import AgentError
from agent.limits import Limits
from agent.mapping import SiteMapping, load_mapping
from agent.records import parse_records
from agent.registry.index import parse_index
from agent.types import RecordFormat

REPO = Path(__file__).resolve().parents[1]
LIMITS = Limits()
AS_OF = datetime(2026, 3, 15, 12, tzinfo=UTC)  # the demo fixtures' clinical time
DEMO_ARCHIVE = REPO / "fixtures/registry/bundles/deterioration/deterioration-1.0.0.tar.gz"
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
    return TrustStore.of(load_public_key(REPO / "fixtures/keys/demo-publisher.pub"))


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
}
