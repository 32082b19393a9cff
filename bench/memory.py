"""Where resident memory comes from: RSS of a fresh interpreter after one import statement.

Run in a child process per statement (imports cannot be undone), so each figure is that
import's whole footprint on top of a bare interpreter, shared dependencies included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# id -> (what, import statement)
IMPORTS: dict[str, tuple[str, str]] = {
    "python": ("bare Python", "pass"),
    "agent": ("agent (agent.daemon: everything `serve` loads)", "import agent.daemon"),
    "pipeline": ("agent.pipeline (records, mapping, runtime, monitor)", "import agent.pipeline"),
    "units": ("pint + ucumvert (the mapping's unit conversion)", "import pint, ucumvert"),
    "fhir": (
        "fhir.resources R4B Bundle, Patient, Observation",
        "import fhir.resources.R4B.bundle, fhir.resources.R4B.patient, "
        "fhir.resources.R4B.observation",
    ),
    "wasmtime": ("wasmtime", "import wasmtime"),
    "web": ("starlette + uvicorn", "import starlette.applications, uvicorn"),
    "sklearn": ("scikit-learn (sklearn.ensemble)", "import sklearn.ensemble"),
    "onnxruntime": ("onnxruntime", "import onnxruntime"),
}
QUICK = ("python", "agent")
_PROBE = (
    "import sys; exec(sys.argv[1]); "
    "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
)


def import_rss(statement: str, cwd: Path) -> int:
    """Bytes resident after ``statement`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, statement],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout.split()[-1]) * 1024


def breakdown(cwd: Path, quick: bool) -> list[dict[str, int | str]]:
    """RSS per import of ``IMPORTS`` (only ``QUICK`` in quick mode)."""
    ids = QUICK if quick else tuple(IMPORTS)
    return [
        {"id": key, "import": IMPORTS[key][0], "rss_bytes": import_rss(IMPORTS[key][1], cwd)}
        for key in ids
    ]
