"""The result files of a batch: one NDJSON line per input record, and what is derived
from those lines when the file is published (the CSV table and the run report).

The NDJSON line is the record of truth: the CSV and the report are computed from it in a
streaming pass at publish time, so they never disagree with it and need no checkpoints of
their own. The report carries only positions, line numbers, counts and reason slugs; the
result lines may carry the caller's labels (a patient reference, a message control id).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agent.batch.items import Lines
from agent.outputs.prediction_json import prediction_json
from agent.types import Prediction

ERRORS_LISTED_MAX = 1000  # per-record errors named in a report; counts are always complete


def _line(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _head(position: int, lines: Lines, label: str, status: str) -> dict[str, Any]:
    return {
        "position": position,
        "lines": list(lines) if lines else None,
        "label": label,
        "status": status,
    }


def error_line(position: int, lines: Lines, label: str, reason: str, detail: str) -> bytes:
    return _line({**_head(position, lines, label, "error"), "reason": reason, "detail": detail})


def predictions_line(
    position: int, lines: Lines, label: str, predictions: Sequence[Prediction]
) -> bytes:
    """A record's line: the prediction's fields inline when there is one (the usual case),
    a ``predictions`` list when one record held several patients."""
    bodies = [prediction_json(p) for p in predictions]
    for body in bodies:
        body.pop("record", None)
    if len(predictions) == 1:
        return _line({**_head(position, lines, predictions[0].label or label, "ok"), **bodies[0]})
    for body, prediction in zip(bodies, predictions, strict=True):
        body["label"] = prediction.label
    return _line({**_head(position, lines, label, "ok"), "predictions": bodies})


def vector_line(
    position: int,
    lines: Lines,
    label: str,
    model: str,
    version: str | None,
    outputs: Mapping[str, float],
) -> bytes:
    body = {"model": model, "version": version, "outputs": dict(outputs)}
    return _line({**_head(position, lines, label, "ok"), **body})


def read_results(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as stream:
        for raw in stream:
            yield json.loads(raw)


def _predictions_of(line: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "predictions" in line:
        return list(line["predictions"])
    return [line] if line.get("status") == "ok" else []


@dataclass
class RunSummary:
    """Counts of one scored file, computed from its result lines."""

    records: int = 0
    ok: int = 0
    failed: int = 0
    predictions: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_names: dict[str, None] = field(default_factory=dict)  # ordered set

    @classmethod
    def of(cls, results: Path) -> RunSummary:
        summary = cls()
        for line in read_results(results):
            summary.records += 1
            if line["status"] == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
                summary.reasons[line["reason"]] += 1
                if len(summary.errors) < ERRORS_LISTED_MAX:
                    where = {"position": line["position"], "lines": line["lines"]}
                    summary.errors.append({**where, "reason": line["reason"]})
            for prediction in _predictions_of(line):
                summary.predictions += 1
                summary.output_names.update(dict.fromkeys(prediction["outputs"]))
        return summary

    def report(self, about: Mapping[str, Any], outputs: Sequence[str]) -> dict[str, Any]:
        """The run report: ``about`` (file, format, model, times) plus PHI-free counts."""
        return {
            **about,
            "records": {"in": self.records, "ok": self.ok, "failed": self.failed},
            "predictions": self.predictions,
            "reasons": dict(sorted(self.reasons.items())),
            "errors": self.errors,
            "errors_truncated": self.failed > len(self.errors),
            "outputs": list(outputs),
        }


CSV_HEAD = ("position", "first_line", "last_line", "label", "status", "reason", "model", "version")


def _column(output: str) -> str:
    """An output's column: its name, unless that is one of the fixed columns."""
    return f"output_{output}" if output in (*CSV_HEAD, "warnings") else output


def write_csv(results: Path, stream: BinaryIO, output_names: Sequence[str]) -> None:
    """The result lines as a table: one row per prediction (or per failed record), one
    column per model output (``output_<name>`` where a name is a fixed column's),
    warnings as ``feature:warning`` joined by ``;``."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow([*CSV_HEAD, *(_column(name) for name in output_names), "warnings"])
    for line in read_results(results):
        first, last = line["lines"] or ("", "")
        head = [line["position"], first, last]
        if line["status"] != "ok":
            blanks = [""] * (len(output_names) + 3)  # model, version, outputs, warnings
            writer.writerow([*head, line["label"], "error", line["reason"], *blanks])
            continue
        for prediction in _predictions_of(line):
            outputs = prediction["outputs"]
            warnings = ";".join(
                f"{w['feature']}:{w['warning']}" for w in prediction.get("warnings", ())
            )
            writer.writerow(
                [
                    *head,
                    prediction.get("label", line["label"]),
                    "ok",
                    "",
                    prediction["model"],
                    prediction["version"] or "",
                    *(outputs.get(name, "") for name in output_names),
                    warnings,
                ]
            )
    text.flush()
    text.detach()
