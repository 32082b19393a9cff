"""Writes ``extract_golden.json``: the outcome digests of the extraction corpus
(``extract_corpus.py``) as the tree on ``PYTHONPATH`` computes them. Run it against the tree
whose behaviour is the reference, from this directory's parent's parent:

    PYTHONPATH=/path/to/reference .venv/bin/python tests/mapping/extract_golden_gen.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract_corpus import GOLDEN, outcomes
from mapping_builders import manifest_document

from agent.bundle.manifest import BundleManifest


def main() -> None:
    manifest = BundleManifest.model_validate(manifest_document())
    with tempfile.TemporaryDirectory() as scratch:
        golden = outcomes(manifest, Path(scratch))
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
