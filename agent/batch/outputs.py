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
import numbers
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from agent.batch.items import Lines
from agent.outputs.prediction_json import outcome_json
from agent.types import PatientOutcome, ScoreResult

ERRORS_LISTED_MAX = 1000  # per-record errors named in a report; counts are always complete


def result_line(body: Mapping[str, Any]) -> bytes:
    """``body`` as one compact UTF-8 JSON line. orjson, about 80 times the stdlib's speed on a
    result line (the stdlib took 20 us of the batch's per-record budget); it writes NaN and
    infinities as ``null``, as JSON has no such numbers."""
    return orjson.dumps(body, default=_real, option=orjson.OPT_APPEND_NEWLINE)


def _real(value: object) -> float:
    """A number orjson does not write itself (a float subclass, a numpy scalar) as a float,
    as the stdlib wrote it."""
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _head(position: int, lines: Lines, label: str, status: str) -> dict[str, Any]:
    return {
        "position": position,
        "lines": list(lines) if lines else None,
        "label": label,
        "status": status,
    }


def error_line(
    position: int, lines: Lines, label: str, reason: str, detail: str, feature: str | None = None
) -> bytes:
    """A record that was not read (or a request refused whole): its reason, its detail and,
    for a feature-CSV cell, the feature, as a refused patient's line names it."""
    body = {**_head(position, lines, label, "error"), "reason": reason, "detail": detail}
    if feature is not None:
        body["feature"] = feature
    return result_line(body)


def outcome_line(
    position: int, lines: Lines, label: str, result: ScoreResult, outcome: PatientOutcome
) -> bytes:
    """One patient's line (a one-patient record, a feature row): its outcome's fields
    inline, status ``ok`` (scored) or ``error`` with the refusal's reason, detail and
    feature, and the model that answered."""
    body = outcome_json(outcome)
    body.pop("record", None)
    status = "ok" if body.pop("status") == "scored" else "error"
    head = _head(position, lines, outcome.label or label, status)
    return result_line({**head, **_model(result), **body})


def _model(result: ScoreResult) -> dict[str, str]:
    return {
        "model": result.model,
        "version": result.version,
        "bundle_digest": result.bundle_digest,
    }


def outcomes_line(position: int, lines: Lines, label: str, result: ScoreResult) -> bytes:
    """A record's line. One patient (the usual case): ``outcome_line``. Several patients (an
    HL7 message with several PIDs): each outcome in ``predictions``, status ``ok`` only when
    every one was scored, else ``error`` with the first refusal's reason."""
    if len(result.outcomes) == 1:
        return outcome_line(position, lines, label, result, result.outcomes[0])
    bodies = []
    for outcome in result.outcomes:
        body = outcome_json(outcome)
        body.pop("record", None)
        bodies.append({"label": outcome.label, **_model(result), **body})
    refused = [o.refusal for o in result.outcomes if o.refusal is not None]
    if not refused:
        return result_line({**_head(position, lines, label, "ok"), "predictions": bodies})
    detail = f"{len(refused)} of {len(bodies)} patients not scored"
    return result_line(
        {
            **_head(position, lines, label, "error"),
            "reason": refused[0].reason,
            "detail": detail,
            "predictions": bodies,
        }
    )


def read_results(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as stream:
        for raw in stream:
            yield orjson.loads(raw)


def _outcomes_of(line: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-patient outcomes of a result line (a bad record has none)."""
    if "predictions" in line:
        return list(line["predictions"])
    return [line] if "outputs" in line or "patient" in line else []


def _predictions_of(line: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [o for o in _outcomes_of(line) if "outputs" in o]


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


CSV_HEAD = (
    "position",
    "first_line",
    "last_line",
    "label",
    "status",
    "reason",
    "feature",
    "model",
    "version",
    "bundle_digest",
)


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
        outcomes = _outcomes_of(line)
        if not outcomes:  # a record that was not read: one row, no model
            blanks = [""] * (len(output_names) + 4)  # model to digest, outputs, warnings
            reason, feature = line["reason"], line.get("feature", "")
            writer.writerow([*head, line["label"], "error", reason, feature, *blanks])
            continue
        for outcome in outcomes:
            outputs = outcome.get("outputs") or {}
            warnings = ";".join(
                f"{w['feature']}:{w['warning']}" for w in outcome.get("warnings", ())
            )
            writer.writerow(
                [
                    *head,
                    outcome.get("label", line["label"]),
                    "ok" if "outputs" in outcome else "error",
                    outcome.get("reason", ""),
                    outcome.get("feature", ""),
                    outcome.get("model", ""),
                    outcome.get("version") or "",
                    outcome.get("bundle_digest") or "",
                    *(outputs.get(name, "") for name in output_names),
                    warnings,
                ]
            )
    text.flush()
    text.detach()
