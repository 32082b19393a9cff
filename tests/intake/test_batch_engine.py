"""The batch engine on real files: every format in, every output out, checkpoints and resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.batch.config import OutputKind
from agent.batch.engine import BatchEngine, BatchSettings
from agent.batch.formats import InputFormat, detect_format
from agent.batch.items import UnreadableFile
from agent.batch.outputs import RunSummary, result_line
from agent.batch.scoring import RESULTS_PART
from agent.limits import Limits
from agent.types import IntakePath
from tests.intake.dropfolder_support import RecordScorer, risk_of

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid}


def observation(pid: str, value: float | None, ref: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": ref or f"Patient/{pid}"},
    }
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": "/min"}
    return resource


def bundle(pid: str, values: list[float | None]) -> dict[str, Any]:
    entries = [patient(pid)] + [observation(pid, v) for v in values]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in entries],
    }


def engine(scorer: Any = None, **overrides: Any) -> BatchEngine:
    settings: dict[str, Any] = {
        "model": "demo",
        "intake": IntakePath.cli,
        "outputs": frozenset(OutputKind),
        "limits": Limits(),
        "checkpoint_records": 3,
    }
    settings.update(overrides)
    return BatchEngine(scorer or RecordScorer(), BatchSettings(**settings))


def score_file(tmp_path: Path, source: Path, scorer: Any = None) -> tuple[RunSummary, Path]:
    batch = engine(scorer)
    job = batch.begin(tmp_path / "work", source, source.name, source.name, "job")
    assert batch.run(job)
    outdir = tmp_path / "out"
    outdir.mkdir(exist_ok=True)
    return batch.publish(job, outdir), outdir


def results(outdir: Path, stem: str) -> list[dict[str, Any]]:
    lines = (outdir / f"{stem}.results.ndjson").read_text().splitlines()
    return [json.loads(line) for line in lines]


def write_ndjson(path: Path, documents: list[Any]) -> Path:
    path.write_text("".join(d if isinstance(d, str) else json.dumps(d) + "\n" for d in documents))
    return path


def test_ndjson_bundle_per_line_bad_line_fails_alone(tmp_path: Path) -> None:
    source = write_ndjson(
        tmp_path / "batch.ndjson",
        [
            bundle("a", [10, 20]),
            "{not json\n",
            bundle("b", [None]),  # the scorer refuses this one
            "\n",
            bundle("c", [5]),
        ],
    )
    summary, outdir = score_file(tmp_path, source)
    lines = results(outdir, "batch.ndjson")
    assert [line["position"] for line in lines] == [1, 2, 3, 4]
    assert [line["status"] for line in lines] == ["ok", "error", "error", "ok"]
    assert lines[0]["outputs"]["risk"] == risk_of(30) and lines[0]["label"] == "Patient/a"
    assert lines[1]["reason"] == "bad_json" and lines[1]["lines"] == [2, 2]
    assert lines[2]["reason"] == "bad_input" and "valueQuantity" in lines[2]["detail"]
    assert lines[3]["lines"] == [5, 5] and lines[3]["model"] == "demo"
    assert lines[3]["version"] == "1.0.0"
    assert (summary.records, summary.ok, summary.failed) == (4, 2, 2)

    report = json.loads((outdir / "batch.ndjson.report.json").read_text())
    assert report["records"] == {"in": 4, "ok": 2, "failed": 2}
    assert report["reasons"] == {"bad_input": 1, "bad_json": 1}
    assert report["errors"] == [
        {"position": 2, "lines": [2, 2], "reason": "bad_json"},
        {"position": 3, "lines": [3, 3], "reason": "bad_input"},
    ]
    assert "Patient/" not in json.dumps(report)  # no patient identifiers in the report


def test_ndjson_resources_grouped_by_patient_across_the_file(tmp_path: Path) -> None:
    """A bulk export lists Patients first; each patient's resources are gathered anyway."""
    observations_of_b = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": observation("p2", 5)}],
    }
    source = write_ndjson(
        tmp_path / "export.ndjson",
        [
            patient("p1"),
            patient("p2"),
            observation("p1", 1),
            {"resourceType": "Organization", "id": "org"},  # not part of a patient record
            observation("p2", 7),
            "[1]\n",
            observation("p2", 3, ref="http://ehr.example/fhir/Patient/p2/_history/4"),
            observation("p1", 2),
            {"resourceType": "Observation", "status": "final"},  # names no patient
            observations_of_b,
        ],
    )
    _, outdir = score_file(tmp_path, source)
    lines = results(outdir, "export.ndjson")
    assert [(r["position"], r["label"], r["lines"], r["status"]) for r in lines] == [
        (1, "Patient/p1", [1, 8], "ok"),
        (2, "Patient/p2", [2, 10], "ok"),
        (3, "", [6, 6], "error"),
        (4, "", [9, 9], "error"),
    ]
    assert lines[0]["outputs"] == {"risk": risk_of(3), "n_obs": 2.0}
    assert lines[1]["outputs"] == {"risk": risk_of(15), "n_obs": 3.0}
    assert [lines[2]["reason"], lines[3]["reason"]] == ["not_fhir", "no_subject"]


def test_ndjson_fixture_export(tmp_path: Path) -> None:
    source = tmp_path / "multi.ndjson"
    source.write_bytes((FIXTURES / "fhir" / "multi-patient.ndjson").read_bytes())
    summary, outdir = score_file(tmp_path, source)
    lines = results(outdir, "multi.ndjson")
    # two Patients, two Observations each, and a last-line Bundle with one more for each
    assert [(r["lines"], r["outputs"]["n_obs"]) for r in lines] == [([1, 7], 3.0), ([2, 7], 3.0)]
    assert summary.failed == 0


def test_bundle_file_split_per_patient(tmp_path: Path) -> None:
    entries = [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "x"}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Patient", "id": "y"}},
        {"resource": observation("", 4, ref="urn:uuid:1")},
        {"resource": observation("", 6, ref="Patient/y")},
        {"resource": observation("", 8, ref="urn:uuid:2")},
        {"resource": {"resourceType": "Organization", "id": "site"}},
    ]
    source = tmp_path / "two.json"
    source.write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    )
    _, outdir = score_file(tmp_path, source)
    lines = results(outdir, "two.json")
    assert [(r["label"], r["outputs"]["risk"]) for r in lines] == [
        ("Patient/x", risk_of(4)),
        ("Patient/y", risk_of(14)),
    ]
    assert lines[0]["lines"] is None


def test_bundle_file_of_one_patient_is_one_record(tmp_path: Path) -> None:
    source = tmp_path / "one.json"
    source.write_text(json.dumps(bundle("solo", [1, 2, 3]), indent=2))
    _, outdir = score_file(tmp_path, source)
    assert [(r["label"], r["outputs"]["n_obs"]) for r in results(outdir, "one.json")] == [
        ("Patient/solo", 3.0)
    ]


def hl7_message(control_id: str, mrn: str, values: list[float]) -> list[str]:
    segments = [
        f"MSH|^~\\&|LAB|HOSP|EDGE|HOSP|20240101120000||ORU^R01|{control_id}|P|2.5",
        f"PID|1||{mrn}^^^HOSP^MR||DOE^JANE",
    ]
    segments += [f"OBX|{i}|NM|8867-4^HR^LN||{v}|/min|||||F" for i, v in enumerate(values, 1)]
    return segments


@pytest.mark.parametrize("newline", ["\r", "\n", "\r\n"])
def test_hl7_batch_split_into_messages(tmp_path: Path, newline: str) -> None:
    segments = ["FHS|^~\\&|LAB", "BHS|^~\\&|LAB"]
    segments += hl7_message("C1", "M1", [10, 20]) + hl7_message("C2", "M2", [5])
    segments += ["OBX|1|NM|x||1|/min"]  # out of place but part of message C2
    segments += [*hl7_message("C3", "M3", []), "BTS|3", "FTS|1"]
    source = tmp_path / "batch.hl7"
    source.write_bytes(newline.join(segments).encode() + newline.encode())
    _, outdir = score_file(tmp_path, source)
    lines = results(outdir, "batch.hl7")
    assert [(r["status"], r["label"], r["outputs"]["n_obs"]) for r in lines] == [
        ("ok", "Patient/M1", 2.0),
        ("ok", "Patient/M2", 2.0),
        ("ok", "Patient/M3", 0.0),
    ]
    assert lines[0]["lines"] == [3, 6]


def test_hl7_segments_before_msh_are_one_bad_record(tmp_path: Path) -> None:
    source = tmp_path / "odd.hl7"
    source.write_text("\r".join(["PID|1||X", "OBX|1|NM|x||1", *hl7_message("C9", "M9", [1])]))
    _, outdir = score_file(tmp_path, source)
    lines = results(outdir, "odd.hl7")
    assert [(r["status"], r.get("reason"), r["lines"]) for r in lines] == [
        ("error", "no_msh", [1, 2]),
        ("ok", None, [3, 5]),
    ]


def test_feature_csv_scored_as_vectors(tmp_path: Path) -> None:
    source = tmp_path / "features.csv"
    source.write_text("label,hr,temp\nr1,80,37\nr2,90,\nr3,1e2,x\nr4,1,2,3\n\nr5,-50,10\n")
    summary, outdir = score_file(tmp_path, source)
    lines = results(outdir, "features.csv")
    assert [(r["label"], r["status"], r.get("reason")) for r in lines] == [
        ("r1", "ok", None),
        ("r2", "error", "missing"),  # the data plane's refusal, as for a record
        ("r3", "error", "bad_value"),
        ("r4", "error", "wrong_width"),
        ("r5", "ok", None),
    ]
    assert lines[0]["outputs"] == {"risk": risk_of(117)} and lines[4]["lines"] == [7, 7]
    assert lines[1]["feature"] == "temp" and "temp" in lines[1]["detail"]
    assert lines[1]["version"] == "1.0.0" and summary.failed == 3
    table = list(csv.DictReader((outdir / "features.csv.results.csv").read_text().splitlines()))
    assert [row["risk"] for row in table] == [str(risk_of(117)), "", "", "", str(risk_of(-40))]
    assert (table[1]["reason"], table[1]["feature"]) == ("missing", "temp")
    assert (table[2]["reason"], table[2]["feature"]) == ("bad_value", "temp")  # as read
    assert table[1]["version"] == "1.0.0"


def test_feature_csv_without_the_models_columns_fails_rows_naming_them(tmp_path: Path) -> None:
    source = tmp_path / "three.csv"
    source.write_text("a,b,c\n1,2,3\n4,5,6\n")
    _, outdir = score_file(tmp_path, source)
    lines = results(outdir, "three.csv")
    assert {(r["reason"], r["detail"]) for r in lines} == {
        ("missing_column", "the CSV has no column for hr, temp")
    }


def test_csv_and_fhir_outputs(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "in.ndjson", [bundle("a", [1]), "[]\n", bundle("b", [2])])
    _, outdir = score_file(tmp_path, source)
    table = list(csv.DictReader((outdir / "in.ndjson.results.csv").read_text().splitlines()))
    assert [(r["position"], r["status"], r["label"]) for r in table] == [
        ("1", "ok", "Patient/a"),
        ("2", "error", ""),
        ("3", "ok", "Patient/b"),
    ]
    assert table[0]["risk"] == str(risk_of(1)) and table[0]["n_obs"] == "1.0"
    risks = [
        json.loads(x) for x in (outdir / "in.ndjson.riskassessment.ndjson").read_text().splitlines()
    ]
    assert [r["subject"]["reference"] for r in risks] == ["Patient/a", "Patient/b"]
    assert risks[1]["prediction"][0] == {
        "outcome": {"text": "risk"},
        "probabilityDecimal": risk_of(2),
    }
    assert all(r["resourceType"] == "RiskAssessment" for r in risks)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.ndjson", "", InputFormat.ndjson),
        ("a.csv", "", InputFormat.features_csv),
        ("a.hl7", "", InputFormat.hl7v2),
        (
            "export",
            '{"resourceType":"Patient","id":"1"}\n{"resourceType":"Patient","id":"2"}\n',
            InputFormat.ndjson,
        ),
        ("one.json", '{"resourceType":"Patient","id":"1"}\n', InputFormat.fhir_json),
        ("pretty.json", '{\n "resourceType": "Bundle"\n}\n', InputFormat.fhir_json),
        ("msgs.txt", "\ufeffMSH|^~\\&|A\rPID|1\r", InputFormat.hl7v2),
        ("batch.dat", "FHS|^~\\&|A\n", InputFormat.hl7v2),
        ("rows.txt", "hr,temp\n1,2\n", InputFormat.features_csv),
    ],
)
def test_format_detection(tmp_path: Path, name: str, content: str, expected: InputFormat) -> None:
    path = tmp_path / name
    path.write_text(content)
    with path.open("rb") as stream:
        assert detect_format(stream, name, Limits()) is expected
        assert stream.tell() == 0  # left where the reader starts


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("blob.bin", "just some words\n", "unknown_format"),
        ("empty.txt", "", "unknown_format"),
        ("broken.json", '{"resourceType": "Bundle", ', "bad_json"),
        ("list.json", "[1, 2]", "not_fhir"),
        ("nofeatures.csv", "label\nx\n", "bad_header"),
        ("dupes.csv", "a,a\n1,2\n", "bad_header"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, reason: str) -> None:
    source = tmp_path / name
    source.write_text(content)
    batch = engine()
    job = batch.begin(tmp_path / "work", source, name, name, "job")
    with pytest.raises(UnreadableFile) as caught:
        batch.run(job)
    assert caught.value.reason == reason


def test_document_over_its_limit_is_unreadable(tmp_path: Path) -> None:
    source = tmp_path / "big.json"
    source.write_text(json.dumps(bundle("a", [1] * 50)))
    batch = engine(document_max=100)
    job = batch.begin(tmp_path / "work", source, source.name, source.name, "job")
    with pytest.raises(UnreadableFile, match="larger than allowed"):
        batch.run(job)


@pytest.mark.parametrize("name", ["big.json", "big-export"])
def test_one_line_document_past_the_line_limit_is_read_whole(tmp_path: Path, name: str) -> None:
    """A document on one line longer than an NDJSON line may be is one document, read
    under ``document_max``, not refused by the line limit (4 MB by default)."""
    observations = [1.0] * 60_000
    source = tmp_path / name
    source.write_text(json.dumps(bundle("a", observations)))
    assert source.stat().st_size > Limits().http_body_max
    summary, _ = score_file(tmp_path, source)
    assert (summary.records, summary.ok) == (1, 1)


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


class CrashingScorer(RecordScorer):
    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at = crash_at

    def predict(self, request: Any) -> Any:
        if self.calls + 1 == self.crash_at:
            raise Crash
        return super().predict(request)


@pytest.mark.parametrize("crash_at", [1, 2, 4, 7, 10])
def test_crash_then_resume_gives_one_line_per_record(tmp_path: Path, crash_at: int) -> None:
    source = write_ndjson(tmp_path / "in.ndjson", [bundle(f"p{i}", [i]) for i in range(10)])
    work = tmp_path / "work"
    first = engine(CrashingScorer(crash_at), checkpoint_records=3)
    job = first.begin(work, source, source.name, source.name, "job")
    with pytest.raises(Crash):
        first.run(job)
    part = work / RESULTS_PART
    part_lines = part.read_bytes().count(b"\n")
    assert part_lines == crash_at - 1  # written, though not all committed
    with part.open("ab") as stream:
        stream.write(b'{"half a line')  # what a kill mid-write leaves

    second = engine(RecordScorer(), checkpoint_records=3)
    resumed = second.resume(work)
    assert resumed.journal.records_done == (crash_at - 1) // 3 * 3
    assert second.run(resumed)
    outdir = tmp_path / "out"
    outdir.mkdir()
    second.publish(resumed, outdir)
    lines = results(outdir, "in.ndjson")
    assert [line["position"] for line in lines] == list(range(1, 11))
    assert [line["label"] for line in lines] == [f"Patient/p{i}" for i in range(10)]


def test_stop_checkpoints_and_resume_finishes(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "in.ndjson", [bundle(f"p{i}", [i]) for i in range(8)])
    scorer = RecordScorer()
    batch = engine(scorer, checkpoint_records=100)
    job = batch.begin(tmp_path / "work", source, source.name, source.name, "job")
    assert batch.run(job, stop=lambda: scorer.calls >= 3) is False
    assert batch.resume(tmp_path / "work").journal.records_done == 3
    again = batch.resume(tmp_path / "work")
    assert batch.run(again)
    assert again.journal.records_done == 8
    assert batch.run(again)  # a finished job is not scored twice
    assert scorer.calls == 8


def test_progress_reports_records_and_bytes(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "in.ndjson", [bundle(f"p{i}", [i]) for i in range(5)])
    seen = []
    batch = engine()
    job = batch.begin(tmp_path / "work", source, source.name, source.name, "job")
    batch.run(job, progress=seen.append)
    assert [p.records for p in seen] == [1, 2, 3, 4, 5]
    read = [p.bytes_read for p in seen]
    assert read == sorted(read) and 0 < read[-1] < seen[-1].bytes_total == source.stat().st_size


def test_result_lines_are_strict_json_whatever_the_numbers() -> None:
    """NaN has no JSON form (the stdlib wrote a bare ``NaN``), numpy scalars are numbers,
    text stays UTF-8: every line is one that any JSON reader takes."""
    line = result_line({"label": "Ærø", "p": np.float32(0.25), "q": np.float64(0.5), "r": np.nan})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line, parse_constant=pytest.fail) == {
        "label": "Ærø",
        "p": 0.25,
        "q": 0.5,
        "r": None,
    }
    assert "Ærø".encode() in line
