"""A small scripted data plane for the drop folder and batch tests, and a driver process.

``RecordScorer`` computes its outputs from the record itself (the sum and count of the
numeric observation values), so a test can check that each output line belongs to its
input record. Run as a script, this module is a drop folder process for the crash tests:

    python -m tests.intake.dropfolder_support ROOT DELAY_SECONDS SETTLE_SECONDS

It serves ``ROOT/{inbox,outbox,processed,failed,state}`` until SIGTERM.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.errors import FhirError, Hl7Error, RecordError
from agent.intake.dropfolder.config import DropFolderConfig
from agent.intake.dropfolder.folder import DropFolder
from agent.limits import Limits
from agent.types import FeatureVector, Prediction, RecordFormat, Refusal, ScoreRequest
from tests.support.plane import ScriptedPlane

MODEL = "demo"


def risk_of(total: float) -> float:
    return round(1.0 / (1.0 + math.exp(-total / 100.0)), 6)


class RecordScorer(ScriptedPlane):
    """A scripted data plane: risk = logistic(sum of observation values)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.calls = 0

    def predict(self, request: ScoreRequest) -> list[Prediction]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if request.format is RecordFormat.hl7v2:
            label, values = _hl7_values(request.body)
        else:
            label, values = _fhir_values(json.loads(request.body))
        total = sum(values)
        outputs = {"risk": risk_of(total), "n_obs": float(len(values))}
        vector = FeatureVector(values=(total, float(len(values))), features=())
        subject = {"reference": label}
        return [Prediction(MODEL, "1.0.0", "0" * 64, outputs, vector, label, subject=subject)]

    def predict_rows(self, rows: Sequence[Sequence[float]]) -> list[Mapping[str, float] | Refusal]:
        """risk = logistic(sum of the row); a row with a missing value is refused as the
        real data plane refuses it where the mapping says ``missing: refuse``."""
        self.calls += 1
        if self.delay:
            time.sleep(self.delay * len(rows))
        if any(len(row) != 2 for row in rows):
            raise RecordError("each row needs 2 features in manifest order")
        return [_missing(row) or {"risk": risk_of(sum(row))} for row in rows]


def _missing(row: Sequence[float]) -> Refusal | None:
    absent = [
        name for name, value in zip(ScriptedPlane.features, row, strict=True) if value != value
    ]
    if not absent:
        return None
    detail = f"feature {absent[0]!r}: no value in the record and the mapping says refuse"
    return Refusal("missing", detail, absent[0])


def _fhir_values(document: Mapping[str, Any]) -> tuple[str, list[float]]:
    resources = (
        [e["resource"] for e in document.get("entry", [])]
        if document.get("resourceType") == "Bundle"
        else [document]
    )
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise FhirError("the record needs exactly one Patient")
    values = []
    for resource in resources:
        if resource.get("resourceType") == "Observation":
            quantity = resource.get("valueQuantity")
            if not isinstance(quantity, dict) or "value" not in quantity:
                raise FhirError("Observation.valueQuantity is missing")
            values.append(float(quantity["value"]))
    return f"Patient/{patients[0]['id']}", values


def _hl7_values(body: bytes) -> tuple[str, list[float]]:
    segments = [s for s in body.split(b"\r") if s]
    if not segments or not segments[0].startswith(b"MSH"):
        raise Hl7Error("MSH segment missing")
    pid = [s for s in segments if s.startswith(b"PID|")]
    if not pid:
        raise Hl7Error("PID segment missing")
    values = [float(s.split(b"|")[5]) for s in segments if s.startswith(b"OBX|")]
    return "Patient/" + pid[0].split(b"|")[3].split(b"^")[0].decode(), values


def folder_config(root: Path, **overrides: Any) -> DropFolderConfig:
    settings: dict[str, Any] = {
        "enabled": True,
        "inbox": root / "inbox",
        "outbox": root / "outbox",
        "processed": root / "processed",
        "failed": root / "failed",
        "state": root / "state",
        "model": MODEL,
        "settle_seconds": 0.3,
        "poll_interval": 0.2,
        "outputs": ["ndjson", "csv", "fhir"],
        "checkpoint_records": 5,
        "checkpoint_seconds": 0.2,
    }
    settings.update(overrides)
    return DropFolderConfig.model_validate(settings)


def serve(root: Path, plane: ScriptedPlane, settle: float) -> None:
    """A drop folder on ``ROOT``'s folders until SIGTERM; prints ``ready`` once watching."""
    drop = DropFolder(folder_config(root, settle_seconds=settle), plane, Limits())
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    drop.start()
    print("ready", flush=True)
    stopped.wait()
    drop.stop()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), RecordScorer(float(sys.argv[2])), float(sys.argv[3]))
