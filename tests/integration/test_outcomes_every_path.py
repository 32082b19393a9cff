"""One corpus of mixed inputs through every intake path of the real process (HTTP, MLLP, the
drop folder and ``edge-agent score``): each path gives the same outcome to each patient,
with the same reason from the one vocabulary (docs/outcomes.md).

The corpus: one scorable patient; two patients of whom one lacks his vital signs; no
patient at all (a lone Condition, a CapabilityStatement, an empty Bundle); a transaction
Bundle whose DELETE and GET entries carry nothing; a temperature of 100.4 labelled Cel; an
HL7 ADT without PID; the same patient and the mislabelled temperature as HL7 ORUs. Times are
relative to now, since the drop folder scores what it is given as of its arrival.

Raw feature rows follow the same rules: the same implausible temperature as an Open
Inference Protocol row, a feature-CSV row through the drop folder and ``edge-agent score``,
and as a FHIR record gets the same refusal, with the same reason, feature and detail.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.agent_process import AgentProcess, demo_root, start_agent
from tests.integration.monitoring_records import (
    FEATURES,
    Identity,
    ReferenceRow,
    hl7_message,
    patient_resources,
    reference_rows,
)
from tests.integration.monitoring_traffic import (
    config_for_traffic,
    drop_folder,
    mllp_send,
    wait_for_drop_folder,
)

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/deterioration/predict"
INFER = "/v2/models/deterioration/infer"
Outcomes = list[tuple[str, str | None]]  # per patient: (scored|refused, reason), sorted

NOW = datetime.now(UTC)
WHO = Identity("Doe", "Jane", "MRN-1", "1 Main St", "Town", "0000")
OBSERVED = (NOW - timedelta(hours=1)).isoformat(timespec="seconds")


def _row() -> ReferenceRow:
    return next(r for r in reference_rows() if None not in r.values.values())


def _fever_in_degf(row: ReferenceRow) -> ReferenceRow:
    return ReferenceRow({**row.values, "body_temperature": 100.4}, row.sex)  # "Cel"


def _bundle(resources: list[dict[str, object]], kind: str = "collection") -> bytes:
    entries = [{"resource": r} for r in resources]
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}).encode()


def _without_vitals(row: ReferenceRow) -> list[dict[str, object]]:
    return [
        r
        for r in patient_resources(row, observed_at=OBSERVED)
        if r["resourceType"] == "Patient" or "8867-4" not in json.dumps(r)
    ]


def _transaction(row: ReferenceRow) -> bytes:
    resources = patient_resources(row, observed_at=OBSERVED)
    entries: list[dict[str, object]] = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    entries.append({"request": {"method": "DELETE", "url": "Observation/gone"}})
    entries.append({"request": {"method": "GET", "url": "Observation?code=8867-4"}})
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


def _adt_without_pid() -> bytes:
    stamp = NOW.strftime("%Y%m%d%H%M%S+0000")
    return (
        f"MSH|^~\\&|ADT|GENERAL_HOSP|EDGE_AGENT|GENERAL_HOSP|{stamp}||ADT^A01^ADT_A01|"
        f"ADT-{uuid.uuid4().hex[:8]}|P|2.5\rEVN|A01|{stamp}\rPV1|1|I|WARD^1^1\r"
    ).encode()


def corpus() -> dict[str, tuple[str, bytes, Outcomes]]:
    """name -> (format, body, the outcome each patient must get)."""
    row = _row()
    other = reference_rows()[7]
    scored: Outcomes = [("scored", None)]
    return {
        "one-patient.json": ("fhir", _bundle(patient_resources(row, observed_at=OBSERVED)), scored),
        "two-one-refused.json": (
            "fhir",
            _bundle(patient_resources(row, observed_at=OBSERVED) + _without_vitals(other)),
            sorted([("scored", None), ("refused", "missing")], key=str),
        ),
        "lone-condition.json": (
            "fhir",
            json.dumps(
                {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": "Patient/x"},
                    "clinicalStatus": {"coding": [{"code": "active"}]},
                }
            ).encode(),
            [("refused", "no_patient")],
        ),
        "capability.json": (
            "fhir",
            json.dumps(
                {
                    "resourceType": "CapabilityStatement",
                    "status": "active",
                    "date": "2026-01-01",
                    "kind": "instance",
                    "fhirVersion": "4.0.1",
                    "format": ["json"],
                }
            ).encode(),
            [("refused", "no_patient")],
        ),
        "empty.json": ("fhir", _bundle([]), [("refused", "no_patient")]),
        "transaction.json": ("fhir", _transaction(row), scored),
        "fever-degf.json": (
            "fhir",
            _bundle(patient_resources(_fever_in_degf(row), observed_at=OBSERVED)),
            [("refused", "out_of_range")],
        ),
        "adt-no-pid.hl7": ("hl7", _adt_without_pid(), [("refused", "no_patient")]),
        "oru.hl7": ("hl7", hl7_message(row, "ORU-1", NOW - timedelta(hours=1), WHO), scored),
        "oru-fever.hl7": (
            "hl7",
            hl7_message(_fever_in_degf(row), "ORU-2", NOW - timedelta(hours=1), WHO),
            [("refused", "out_of_range")],
        ),
    }


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(demo_root(tmp_path_factory.mktemp("outcomes"), config_for_traffic))
    yield process
    assert process.stop() == 0, process.log_text()


def _http(agent: AgentProcess, fmt: str, body: bytes) -> Outcomes:
    media = "application/fhir+json" if fmt == "fhir" else "x-application/hl7-v2+er7"
    with agent.client() as client:
        response = client.post(PREDICT, content=body, headers={"Content-Type": media})
    answer = response.json()
    assert response.status_code != 500, response.text
    if response.status_code == 200:
        return sorted(((p["status"], p.get("reason")) for p in answer["predictions"]), key=str)
    assert answer["resourceType"] == "OperationOutcome", response.text
    return sorted((("refused", i["details"]["text"]) for i in answer["issue"]), key=str)


def _mllp(agent: AgentProcess, body: bytes) -> Outcomes:
    port = int(yaml.safe_load(agent.config_path.read_text())["mllp"]["port"])
    ack = mllp_send("127.0.0.1", port, body).decode()
    segments = [s.split("|") for s in ack.split("\r") if s]
    code = next(s[1] for s in segments if s[0] == "MSA")
    if code == "AA":
        return [("scored", None)]
    assert code == "AE", ack
    return sorted((("refused", s[5]) for s in segments if s[0] == "ERR"), key=str)


def _result_lines(path: Path) -> Outcomes:
    outcomes: Outcomes = []
    for raw in path.read_text().splitlines():
        line = json.loads(raw)
        for patient in line.get("predictions") or [line]:
            scored = "outputs" in patient
            outcomes.append(
                ("scored", None) if scored else ("refused", patient.get("reason") or line["reason"])
            )
    return sorted(outcomes, key=str)


def test_every_path_gives_each_patient_the_same_outcome(
    agent: AgentProcess, tmp_path: Path
) -> None:
    items = corpus()
    inbox = drop_folder(agent, "inbox")
    for name, (_, body, _) in items.items():
        temporary = inbox / f".{name}.tmp"
        temporary.write_bytes(body)
        temporary.rename(inbox / name)
    files = tmp_path / "files"
    files.mkdir()
    for name, (_, body, _) in items.items():
        (files / name).write_bytes(body)
    scored_by_cli = tmp_path / "scored"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "score",
            "--config",
            str(agent.config_path),
            "-o",
            str(scored_by_cli),
            *sorted(str(p) for p in files.iterdir()),
        ],
        check=False,
        capture_output=True,
        timeout=120,
    )
    wait_for_drop_folder(agent, list(items), timeout=60)
    outbox = drop_folder(agent, "outbox")

    seen: dict[str, dict[str, Outcomes]] = {}
    for name, (fmt, body, expected) in items.items():
        paths = {
            "http": _http(agent, fmt, body),
            "drop folder": _result_lines(outbox / f"{name}.results.ndjson"),
            "edge-agent score": _result_lines(scored_by_cli / f"{name}.results.ndjson"),
        }
        if fmt == "hl7":
            paths["mllp"] = _mllp(agent, body)
        seen[name] = {path: outcomes for path, outcomes in paths.items() if outcomes != expected}
    assert {name: wrong for name, wrong in seen.items() if wrong} == {}


RowOutcome = tuple[str, str | None, str | None, str | None]  # status, reason, feature, detail


def _raw_rows() -> list[tuple[str, list[float], RowOutcome]]:
    """(label, row in model units with sex as its level index, the outcome it must get)."""
    row = _row()
    values = [v for n in FEATURES[:-1] if (v := row.values[n]) is not None]  # none is None
    good = [*values, float(row.sex == "male")]
    fever = [*good]
    fever[2] = 100.4  # degF where the model reads Cel
    no_pulse = [*good]
    no_pulse[0] = math.nan  # the demo mapping refuses a missing heart rate
    no_wbc = [*good]
    no_wbc[5] = math.nan  # and imputes a missing wbc (the training median)
    out_of_range = (
        "feature 'body_temperature': value outside the plausible range [30, 43] Cel "
        "(a wrong unit or a typo?); the mapping says refuse"
    )
    missing = "feature 'heart_rate': no value in the record and the mapping says refuse"
    return [
        ("good", good, ("scored", None, None, None)),
        ("fever", fever, ("refused", "out_of_range", "body_temperature", out_of_range)),
        ("no-pulse", no_pulse, ("refused", "missing", "heart_rate", missing)),
        ("no-wbc", no_wbc, ("scored", None, None, None)),
    ]


def _oip(rows: list[list[float]]) -> dict[str, object]:
    data = [None if math.isnan(v) else v for row in rows for v in row]
    tensor = {"name": "input", "shape": [len(rows), len(FEATURES)], "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": data}]}


def _csv(rows: list[tuple[str, list[float], RowOutcome]]) -> bytes:
    lines = ["label," + ",".join(FEATURES)]
    for label, row, _ in rows:
        cells = ["" if math.isnan(v) else repr(v) for v in row[:-1]]
        lines.append(",".join([label, *cells, ("female", "male")[int(row[-1])]]))
    return ("\n".join(lines) + "\n").encode()


def _csv_outcomes(path: Path) -> list[RowOutcome]:
    return [
        (
            "scored" if line["status"] == "ok" else "refused",
            line.get("reason"),
            line.get("feature"),
            line.get("detail"),
        )
        for line in map(json.loads, path.read_text().splitlines())
    ]


def test_raw_rows_get_the_outcomes_of_records_on_oip_and_feature_csv(
    agent: AgentProcess, tmp_path: Path
) -> None:
    rows = _raw_rows()
    expected = [outcome for _, _, outcome in rows]
    source = tmp_path / "rows.csv"
    source.write_bytes(_csv(rows))
    temporary = drop_folder(agent, "inbox") / ".rows.csv.tmp"
    temporary.write_bytes(source.read_bytes())
    temporary.rename(temporary.with_name("rows.csv"))
    scored_by_cli = tmp_path / "scored"
    command = [sys.executable, "-m", "agent.cli", "score", "-c", str(agent.config_path)]
    cli = subprocess.run(
        [*command, "-q", "-o", str(scored_by_cli), str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wait_for_drop_folder(agent, ["rows.csv"], timeout=60)

    with agent.client() as client:
        together = client.post(INFER, json=_oip([row for _, row, _ in rows]))
        alone = [client.post(INFER, json=_oip([row])) for _, row, _ in rows]
        fhir = client.post(
            PREDICT,
            content=corpus()["fever-degf.json"][1],
            headers={"Content-Type": "application/fhir+json"},
        )
        metrics = client.get("/metrics").text

    # OIP: any row refused, no output tensor (a NaN would read as low risk): 422 naming rows
    assert together.status_code == 422, together.text
    answer = together.json()
    assert "outputs" not in answer and answer["reason"] == "out_of_range"
    assert answer["error"].startswith("2 of 4 rows not scored; row 1: feature 'body_temperature'")
    refusals = {r["row"]: (r["reason"], r["feature"], r["detail"]) for r in answer["refusals"]}
    assert refusals == {i: e[1:] for i, e in enumerate(expected) if e[0] == "refused"}
    assert "100.4" not in together.text  # the detail names the range, never the value
    oip_alone: list[RowOutcome] = []
    for response in alone:
        if response.status_code == 200:
            [risk] = [o for o in response.json()["outputs"] if o["name"] == "probability_1"]
            assert 0.0 <= risk["data"][0] <= 1.0
            oip_alone.append(("scored", None, None, None))
        else:
            assert response.status_code == 422, response.text
            [refusal] = response.json()["refusals"]
            oip_alone.append(("refused", refusal["reason"], refusal["feature"], refusal["detail"]))
    assert oip_alone == expected

    # the feature CSV: the drop folder and edge-agent score give each row the same outcome
    outbox = drop_folder(agent, "outbox")
    assert _csv_outcomes(outbox / "rows.csv.results.ndjson") == expected
    assert _csv_outcomes(scored_by_cli / "rows.csv.results.ndjson") == expected, cli.stderr
    assert cli.returncode == 1
    assert "4 records, 2 ok, 2 failed (missing 1, out_of_range 1) ->" in cli.stderr
    table = list(csv.DictReader((outbox / "rows.csv.results.csv").read_text().splitlines()))
    assert [(r["label"], r["reason"], r["feature"]) for r in table] == [
        (label, outcome[1] or "", outcome[2] or "") for label, _, outcome in rows
    ]
    assert "wbc:imputed" in table[3]["warnings"]

    # the FHIR record with the same temperature: the same refusal
    [issue] = fhir.json()["issue"]
    assert issue["details"]["text"] == "out_of_range"
    assert issue["diagnostics"].endswith(f": {expected[1][3]}")

    # audited as a request of records is: one entry per request, its verdict, no values
    oip_audit = _audited(agent, "oip", 5)
    assert [e["outcome"] for e in oip_audit] == ["partial", "ok", "refused", "refused", "ok"]
    assert "outputs" not in oip_audit[2] and len(oip_audit[0]["outputs"]) == 2
    csv_audit = [e for e in _audited(agent, "drop_folder", 1) if len(e.get("outputs", ())) == 2]
    assert [(e["request_id"].endswith(":1"), e["outcome"]) for e in csv_audit] == [
        (True, "partial")  # the four rows, named by the first
    ]

    # each refused row counted as mapped refusals are, by path and reason
    assert _errors(metrics, "oip", "out_of_range") == 2.0
    assert _errors(metrics, "oip", "missing") == 2.0
    assert _errors(metrics, "drop_folder", "out_of_range") >= 1.0


def _errors(metrics: str, intake: str, reason: str) -> float:
    wanted = {"model": "deterioration", "intake": intake, "reason": reason}
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "edge_agent_errors_total" and sample.labels == wanted
    )


def _audited(agent: AgentProcess, intake: str, at_least: int) -> list[dict[str, Any]]:
    """The audit log's scoring entries of ``intake``, once it holds ``at_least`` of them
    (the writer thread writes just after the answers)."""
    path = agent.root / "var/demo/audit.jsonl"
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        entries = [e for e in map(json.loads, lines) if e.get("intake") == intake]
        if len(entries) >= at_least or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)
