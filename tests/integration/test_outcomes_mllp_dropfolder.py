"""Live outcomes by MLLP and by a drop-folder CSV, on the real process: demo holdout
patients are scored over MLLP and over HTTP; their outcomes come back later as one HL7
ORU^R01 (the demo's configured outcome code, one PID per patient) and as an outcomes CSV
dropped into the inbox; both join the predictions through the one prediction store, and
the labelled count, the joined outcomes and the live AUROC (checked against
scikit-learn's) move on /metrics and the status page. The distinctive identifiers the
patients were sent with appear in no log line, metric, status page, report or store."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from sklearn.metrics import roc_auc_score

from tests.intake.test_dropfolder import wait_for
from tests.integration.agent_process import AgentProcess, demo_root, start_agent
from tests.integration.monitoring_records import (
    REPO,
    Identity,
    ReferenceRow,
    bundle,
    hl7_message,
    patient_resources,
)

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/deterioration/predict"
HOLDOUT = REPO / "fixtures" / "demo" / "holdout.csv"
SB, EB = b"\x0b", b"\x1c\x0d"
PATIENTS = 80  # holdout rows used: half over MLLP, half over HTTP


def _holdout() -> list[tuple[ReferenceRow, int]]:
    with HOLDOUT.open(newline="") as f:
        rows = list(csv.DictReader(f))[:PATIENTS]
    return [
        (
            ReferenceRow(
                {k: (float(v) if v else None) for k, v in raw.items() if k not in ("sex", "label")},
                raw["sex"],
            ),
            int(raw["label"]),
        )
        for raw in rows
    ]


def _enable(config: dict[str, Any]) -> None:
    config["performance"] = {"enabled": True, "min_labelled": 10}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = start_agent(demo_root(tmp_path_factory.mktemp("outcomes"), _enable))
    yield process
    assert process.stop() == 0, process.log_text()


def _exchange(port: int, messages: list[bytes]) -> list[bytes]:
    """Send each message on one connection and read its ACK."""
    acks = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        pending = bytearray()
        for message in messages:
            sock.sendall(SB + message + EB)
            while EB not in pending:
                chunk = sock.recv(65536)
                assert chunk, "the listener closed the connection"
                pending += chunk
            end = pending.index(EB)
            acks.append(bytes(pending[1:end]))
            del pending[: end + 2]
    return acks


def _fields(ack: bytes, name: str) -> list[list[str]]:
    return [s.split("|") for s in ack.decode("latin-1").split("\r") if s.startswith(name + "|")]


def _metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match[1].split(","))) == wanted:
            return float(match[2])
    return None


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S+0000")


def _msh(kind: str, control_id: str, stamp: str) -> str:
    return f"MSH|^~\\&|EHR|GENERAL_HOSP|EDGE_AGENT|GENERAL_HOSP|{stamp}||{kind}|{control_id}|P|2.5"


def test_outcomes_by_mllp_and_drop_folder_move_the_live_figures(agent: AgentProcess) -> None:
    config = yaml.safe_load(agent.config_path.read_text())
    port = config["mllp"]["port"]
    inbox = (agent.config_path.parent / config["drop_folder"]["inbox"]).resolve()
    outbox = (agent.config_path.parent / config["drop_folder"]["outbox"]).resolve()
    observed = datetime.now(UTC) - timedelta(hours=1)
    token = uuid.uuid4().hex[:8].upper()
    secrets: list[str] = []  # every identifier sent: none may leak
    scores: list[float] = []
    labels: list[int] = []
    by_mllp: list[tuple[str, int]] = []  # (MRN, label) of patients scored over MLLP
    by_http: list[tuple[str, int]] = []  # (Patient/<id>, label) scored over HTTP

    # --- predictions ----------------------------------------------------------------------
    mllp_rows = [(i, row, label) for i, (row, label) in enumerate(_holdout()) if i % 2 == 0]
    identities = [
        Identity(f"Qzx{token}{i}", "Wyn", f"ZQ{token}{i:03d}", f"{i} Oakq Lane", "Vrell", "ZZ9")
        for i, _, _ in mllp_rows
    ]
    messages = [
        hl7_message(row, f"SCORE-{i}", observed, identity)
        for (i, row, _), identity in zip(mllp_rows, identities, strict=True)
    ]
    for ack, (_, _, label), identity in zip(
        _exchange(port, messages), mllp_rows, identities, strict=True
    ):
        secrets += [identity.mrn, identity.family, identity.street]
        if _fields(ack, "MSA")[0][1] != "AA":
            continue  # refused (out of range): no prediction to join
        [risk] = [float(f[5]) for f in _fields(ack, "OBX") if f[3].startswith("probability_1^")]
        scores.append(risk)
        labels.append(label)
        by_mllp.append((identity.mrn, label))
    with agent.client() as client:
        for i, (row, label) in enumerate(_holdout()):
            if i % 2 == 0:
                continue
            resources = patient_resources(row, observed_at=observed.isoformat())
            patient_id = f"px-{token.lower()}-{i:03d}"
            resources[0]["id"] = patient_id
            for resource in resources[1:]:
                resource["subject"] = {"reference": f"Patient/{patient_id}"}
            secrets.append(patient_id)
            response = client.post(
                PREDICT,
                content=bundle(resources),
                headers={"Content-Type": "application/fhir+json"},
            )
            if response.status_code != 200:
                continue
            [prediction] = response.json()["predictions"]
            scores.append(prediction["outputs"]["probability_1"])
            labels.append(label)
            by_http.append((f"Patient/{patient_id}", label))
        before = client.get("/metrics").text
    assert len(by_mllp) >= 25 and len(by_http) >= 25 and 0 < sum(labels) < len(labels)
    assert _metric(before, "edge_agent_live_auroc", model="deterioration", version="1.0.0") is None

    # --- outcomes by MLLP: one ORU^R01, one PID and outcome OBX per patient ----------------
    known = _stamp(datetime.now(UTC) + timedelta(minutes=1))
    segments = [_msh("ORU^R01^ORU_R01", "OUT-1", known)]
    for n, (mrn, label) in enumerate(by_mllp, start=1):
        segments += [
            f"PID|{n}||{mrn}^^^GENERAL_HOSP^MR",
            f"OBX|1|NM|DETERIORATION^Deterioration within 48 h^99EDGE||{label}||||||F|||{known}",
        ]
    outcome = ("\r".join(segments) + "\r").encode()
    stranger = (
        f"{_msh('ADT^A03^ADT_A03', 'OUT-2', known)}\r"
        f"EVN|A03|{known}\rPID|1||ZQ{token}999^^^GENERAL_HOSP^MR\r"
        "PV1|1|I|W3^12^1" + "|" * 33 + "20\r"
    ).encode()
    unclear = (
        f"{_msh('ORU^R01', 'OUT-3', known)}\r"
        f"PID|1||{by_mllp[0][0]}^^^GENERAL_HOSP^MR\r"
        "OBX|1|NM|DETERIORATION^Deterioration^99EDGE||7||||||F\r"
    ).encode()
    secrets.append(f"ZQ{token}999")
    answered = _exchange(port, [outcome, stranger, unclear])
    assert [_fields(a, "MSA")[0][1] for a in answered] == ["AA", "AA", "AE"]
    assert _fields(answered[2], "ERR")[0][8].startswith("no_outcome")

    # --- outcomes by a CSV in the drop folder ---------------------------------------------
    as_of = (datetime.now(UTC) + timedelta(minutes=1)).isoformat(timespec="seconds")
    lines = ["patient,as_of,label"] + [f"{p},{as_of},{label}" for p, label in by_http]
    temp = inbox / ".outcomes.csv.part"
    temp.write_text("\n".join(lines) + "\n")
    os.rename(temp, inbox / "outcomes.csv")
    report_path = outbox / "outcomes.csv.report.json"
    report = wait_for(lambda: report_path.exists() and json.loads(report_path.read_text()), 60)
    assert (report["rows"], report["recorded"], report["joined"], report["refused"]) == (
        len(by_http),
        len(by_http),
        len(by_http),
        {},
    )

    # --- the figures moved -----------------------------------------------------------------
    with agent.client() as client:
        after = client.get("/metrics").text
        page = client.get("/").text
    live = _metric(after, "edge_agent_live_auroc", model="deterioration", version="1.0.0")
    assert live == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    labelled = _metric(
        after, "edge_agent_live_labelled_predictions", model="deterioration", version="1.0.0"
    )
    assert labelled == len(scores)
    joined = _metric(after, "edge_agent_outcomes_total", model="deterioration", outcome="joined")
    unmatched = _metric(
        after, "edge_agent_outcomes_total", model="deterioration", outcome="unmatched"
    )
    assert (joined, unmatched) == (len(scores), 1)  # the stranger's death joined nothing
    assert f"<td class='live-auroc'>{live:.3f}</td>" in page

    # --- and no identifier went anywhere -----------------------------------------------------
    store = agent.root / "var" / "demo" / "store" / "state"
    raw = b"".join(p.read_bytes() for p in store.glob("performance.sqlite*"))
    for where, text in {
        "log": agent.log_text(),
        "metrics": after,
        "status page": page,
        "report": json.dumps(report),
        "store": raw.decode("latin-1"),
    }.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{where} holds {leaked[:3]}"
