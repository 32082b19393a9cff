"""Extraction is pinned to the bit: every case of ``extract_corpus`` (the fixture records,
seeded random records aimed at the edges, raw rows; three mappings; several as-of times)
gives the outcome digest recorded in ``extract_golden.json`` — the same vector, provenance,
warnings and survey, or the same refusal class, reason, message and feature. The golden
file was written by ``extract_golden_gen.py`` from the tree before the extraction was
reworked for speed; regenerate it only for an intended change of behaviour."""

from __future__ import annotations

import json
from pathlib import Path

from extract_corpus import (
    AS_OFS,
    GOLDEN,
    canonical,
    digest,
    fixture_records,
    mappings,
    outcome,
    random_records,
    raw_rows,
    read_outcome,
)

from agent.bundle.manifest import BundleManifest


def test_every_case_gives_the_recorded_outcome(manifest: BundleManifest, tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    fixtures = dict(fixture_records())
    differ: list[str] = []
    for name, mapping in mappings(manifest, tmp_path).items():
        assert golden["fixtures"][name].keys() <= fixtures.keys(), "a fixture went missing"
        for label, recorded in golden["fixtures"][name].items():
            for as_of, want in zip(AS_OFS, recorded.split(), strict=True):
                got = outcome(mapping, fixtures[label], as_of)
                if digest(got) != want:
                    differ.append(f"{name} {label} {as_of.isoformat()}: {canonical(got)}")
        cases = list(random_records())
        for (label, record, as_of), want in zip(cases, golden["random"][name].split(), strict=True):
            got = outcome(mapping, record, as_of)
            if digest(got) != want:
                differ.append(f"{name} {label}: {canonical(got)}")
        rows = list(raw_rows())
        for i, (row, want) in enumerate(zip(rows, golden["rows"][name].split(), strict=True)):
            got = read_outcome(mapping, row)
            if digest(got) != want:
                differ.append(f"{name} row {i}: {canonical(got)}")
    assert not differ, f"{len(differ)} cases differ; the first: {differ[:3]}"
