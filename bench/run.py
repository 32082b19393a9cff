"""The benchmark suite: the agent against the usual deployment of the same model.

    .venv/bin/python -m bench.run            # full run: docs/benchmarks.md, bench/results.json
    .venv/bin/python -m bench.run --quick    # every benchmark briefly (CI); figures meaningless

Run from the repository root. Four servers take the same two FHIR Bundles, the demo
patient's 30 observations and a small vitals Bundle (Patient + 5 Observations): the agent
(``edge-agent serve`` on the demo config, its signed bundle pulled from the demo file
registry), the agent with full FHIR validation, and two peers (bench/peers: Starlette +
uvicorn + fhir.resources + scikit-learn, or + onnxruntime). Each server runs pinned to
core 0, the client on core 1. The rounds are interleaved (every server measured once per
round, in rotating order) so that a noisy neighbour on a shared machine hurts all alike.
Server CPU time per request is measured beside wall-clock time, as the figure a neighbour
cannot inflate. Then: batch records/s, RSS, install
size, cold start, in-process micro-benchmarks and bench/runtime_bench.py. Quick mode asserts
nothing about times; it checks that everything runs and writes its outputs to a temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench import batch, before_after, install_size, machine, memory, micro, validation_bench
from bench.http_load import Target, concurrent, sequential
from bench.inputs import AS_OF_TEXT, demo_bundle, oru_30_obx, vitals_bundle
from bench.peers.model import PeerModel, check_parity, load_pickled, pickled_model
from bench.peers.sklearn_service import onnxruntime_predictor, sklearn_predictor
from bench.report import render
from bench.servers import Server, pin_client, python_argv, start_server
from bench.stats import median, percentile
from tests.integration.agent_process import demo_root, free_port

REPO = Path(__file__).resolve().parents[1]
FHIR = {"Content-Type": "application/fhir+json"}
HL7 = {"Content-Type": "x-application/hl7-v2+er7"}


@dataclass(frozen=True)
class Settings:
    """How much of everything to run."""

    warmup: int  # requests per server before anything is measured
    rounds: int
    sequential: int  # requests per server per round, one at a time
    clients: int
    per_client: int  # requests per client per round
    batch_records: int
    batch_rounds: int  # each contender's batch runs; the median is reported
    micro_calls: int
    phase_deadline: float  # seconds, a bound on every load phase
    build_venvs: bool

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(5, 1, 10, 2, 5, 10, 1, 10, 20.0, False)
        return cls(100, 5, 200, 4, 100, 1000, 3, 500, 120.0, True)


BUNDLE, VITALS = "bundle", "vitals"
REQUESTS = {BUNDLE: demo_bundle, VITALS: vitals_bundle}  # each measured on every contender
RESULT_KEYS = {BUNDLE: "http", VITALS: "http_vitals"}  # where each one's rows go


@dataclass
class Load:
    """What one contender was measured doing with one request body."""

    target: Target
    latencies: list[float] = field(default_factory=list)  # seconds, one client
    round_p99s: list[float] = field(default_factory=list)  # seconds, one per round
    loaded_latencies: list[float] = field(default_factory=list)  # with the other clients
    rates: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the server's, over the measured requests
    requests: int = 0


@dataclass
class Contender:
    name: str
    server: Server
    loads: dict[str, Load]  # by request, keys of REQUESTS
    rss_after_warmup: int = 0  # bytes

    @classmethod
    def serving(cls, name: str, server: Server, url: str) -> Contender:
        loads = {key: Load(Target(url, body(), FHIR)) for key, body in REQUESTS.items()}
        return cls(name, server, loads)


def _answers(target: Target) -> bool:
    try:
        connection = target.connect()
        try:
            return connection.post() == 200
        finally:
            connection.close()
    except OSError:
        return False


def _start_agent(config: Path, logs: Path, label: str) -> tuple[Server, str]:
    """The agent on ``config``, answering; its server and predict URL."""
    port = yaml.safe_load(config.read_text())["http"]["port"]
    url = f"http://127.0.0.1:{port}/v1/models/deterioration/predict?as_of={AS_OF_TEXT}"
    argv = python_argv("-m", "agent.cli", "serve", "--config", str(config))
    server = start_server(
        label,
        argv,
        config.parent,
        lambda: _answers(Target(url, demo_bundle(), FHIR)),
        logs / f"{label.replace(' ', '-')}.log",
    )
    return server, url


def _start_peer(engine: str, model: Path, logs: Path) -> tuple[Server, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict?as_of={AS_OF_TEXT}"
    argv = python_argv(
        "-m",
        "bench.peers.sklearn_service",
        "--engine",
        engine,
        "--port",
        str(port),
        *(["--model", str(model)] if engine == "sklearn" else []),
    )
    server = start_server(
        f"{engine} service",
        argv,
        REPO,
        lambda: _answers(Target(url, demo_bundle(), FHIR)),
        logs / f"{engine}.log",
    )
    return server, url


def _measure_load(server: Server, load: Load, settings: Settings, name: str) -> None:
    """One round of one request body: one client, then ``settings.clients`` at once."""
    cpu = server.cpu_seconds()
    latencies = sequential(load.target, settings.sequential, settings.phase_deadline)
    loaded = concurrent(load.target, settings.clients, settings.per_client, settings.phase_deadline)
    if loaded.failures:
        raise RuntimeError(f"{name}: {loaded.failures} failed requests")
    load.cpu_seconds += server.cpu_seconds() - cpu
    load.requests += len(latencies) + loaded.requests
    load.latencies += latencies
    load.round_p99s.append(percentile(latencies, 99))
    load.loaded_latencies += loaded.latencies
    load.rates.append(loaded.per_second)


def _measure_http(contenders: list[Contender], settings: Settings) -> None:
    for contender in contenders:
        for load in contender.loads.values():
            sequential(load.target, settings.warmup, settings.phase_deadline)
        contender.rss_after_warmup = contender.server.rss_bytes()
    for round_ in range(settings.rounds):
        order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
        for contender in order:
            for load in contender.loads.values():
                _measure_load(contender.server, load, settings, contender.name)


def _http_rows(
    contenders: list[Contender], settings: Settings, request: str
) -> list[dict[str, Any]]:
    """One row per contender for ``request`` (a key of REQUESTS)."""
    rows = []
    for c in contenders:
        load = c.loads[request]
        rows.append(
            {
                "contender": c.name,
                "request_bytes": len(load.target.body),
                "requests_sequential": len(load.latencies),
                "p50_ms": percentile(load.latencies, 50) * 1e3,
                "p99_ms": percentile(load.latencies, 99) * 1e3,
                "p99_ms_rounds": [p * 1e3 for p in load.round_p99s],
                "mean_ms": sum(load.latencies) / len(load.latencies) * 1e3,
                "clients": settings.clients,
                "loaded_p50_ms": percentile(load.loaded_latencies, 50) * 1e3,
                "loaded_p99_ms": percentile(load.loaded_latencies, 99) * 1e3,
                "requests_per_s": median(load.rates),
                "requests_per_s_rounds": load.rates,
                "server_cpu_ms_per_request": load.cpu_seconds / load.requests * 1e3,
                "rss_bytes": c.rss_after_warmup,
                "rss_bytes_after_rounds": c.server.rss_bytes(),
                "cold_start_s": c.server.cold_start,
                "cold_start_cpu_s": c.server.cold_start_cpu,
            }
        )
    return rows


def _runtime_bench(quick: bool) -> str:
    """bench/runtime_bench.py's own table (the runtime engineer's benchmark), verbatim."""
    script = REPO / "bench" / "runtime_bench.py"
    argv = [sys.executable, str(script), *(["--quick"] if quick else [])]
    done = subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return done.stdout


AGENT, FULL = "agent", "agent, full validation"
PARITY_TOLERANCE = 1e-4  # |p| between the peers' estimator and model.onnx (float32 trees)


def _agent_config(workdir: Path, full: bool) -> Path:
    """A copy of the demo config; ``full`` switches FHIR validation to the site option
    ``full`` (whole resources by the R4B models)."""

    def edit(config: dict[str, Any]) -> None:
        config["mllp"]["port"] = free_port()  # the shipped 2575 may be taken by a neighbour
        if full:
            config.setdefault("records", {})["fhir_validation"] = "full"

    return demo_root(workdir / ("full" if full else "shipped"), edit)


def _drop_batch(name: str, server: Server, config: Path, count: int) -> dict[str, Any]:
    drop = yaml.safe_load(config.read_text())["drop_folder"]
    cpu = server.cpu_seconds()
    seconds = batch.drop_folder_seconds(
        (config.parent / drop["inbox"]).resolve(),
        (config.parent / drop["outbox"]).resolve(),
        count,
        timeout=max(60.0, count * 0.1),
    )
    return {
        "contender": name,
        "records": count,
        "seconds": seconds,
        "cpu_seconds": server.cpu_seconds() - cpu,
        "rss_after_bytes": server.rss_bytes(),
        "how": "drop folder, NDJSON file, outputs written",
    }


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of median seconds, every round's seconds beside it (the spread)."""
    ordered = sorted(rounds, key=lambda r: float(r["seconds"]))
    return {**ordered[len(ordered) // 2], "round_seconds": [r["seconds"] for r in rounds]}


def _peer_batches(peer: PeerModel, count: int, rounds: int) -> list[dict[str, Any]]:
    peers = (
        ("sklearn service", sklearn_predictor(peer), "in-process loop, one predict_proba"),
        ("onnxruntime service", onnxruntime_predictor(), "in-process loop, one session.run"),
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in peers}
    for _ in range(rounds):
        for name, predict, how in peers:
            elapsed = batch.peer_loop_seconds(peer.medians, predict, count)
            runs[name].append(
                {
                    "contender": name,
                    "records": count,
                    "seconds": elapsed.wall,
                    "cpu_seconds": elapsed.cpu,
                    "how": how,
                }
            )
    return [_median_round(runs[name]) for name, _, _ in peers]


def run(quick: bool, workdir: Path, before: str | None = None) -> dict[str, Any]:
    """Every benchmark; the results as plain JSON values. ``before``: a commit to compare the
    request path's stages against (``bench.before_after``), None to skip."""
    settings = Settings.for_mode(quick)
    pin_client()
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "machine": machine.describe(),
        "request_bytes": len(demo_bundle()),
        "vitals_request_bytes": len(vitals_bundle()),
    }
    logs = workdir / "logs"
    logs.mkdir()
    model_path = pickled_model(workdir / "peer-model")
    peer = load_pickled(model_path)
    results["peer_parity_max_abs_diff"] = check_parity(peer)
    if results["peer_parity_max_abs_diff"] > PARITY_TOLERANCE:
        raise RuntimeError("the peers' refitted model is not the one in fixtures/demo/model.onnx")

    shipped, full = _agent_config(workdir, False), _agent_config(workdir, True)
    # A first start fills each store and module cache; the measured servers are restarts.
    first, _ = _start_agent(shipped, logs, "agent first start")
    first.stop()
    results["agent_first_start_s"] = first.cold_start
    results["agent_first_start_cpu_s"] = first.cold_start_cpu
    _start_agent(full, logs, "full first start")[0].stop()
    contenders = [
        Contender.serving(AGENT, *_start_agent(shipped, logs, AGENT)),
        Contender.serving(FULL, *_start_agent(full, logs, FULL)),
        Contender.serving("sklearn service", *_start_peer("sklearn", model_path, logs)),
        Contender.serving("onnxruntime service", *_start_peer("onnxruntime", model_path, logs)),
    ]
    agent = contenders[0]
    try:
        _measure_http(contenders, settings)
        for request, key in RESULT_KEYS.items():
            results[key] = _http_rows(contenders, settings, request)
        hl7 = Target(agent.loads[BUNDLE].target.url, oru_30_obx(), HL7)
        hl7_latencies = sequential(
            hl7, settings.sequential * settings.rounds, settings.phase_deadline
        )
        results["agent_hl7_http"] = {
            "p50_ms": percentile(hl7_latencies, 50) * 1e3,
            "p99_ms": percentile(hl7_latencies, 99) * 1e3,
            "requests": len(hl7_latencies),
        }
        rounds: dict[str, list[dict[str, Any]]] = {AGENT: [], FULL: []}
        for _ in range(settings.batch_rounds):  # interleaved: a neighbour weighs on both
            rounds[AGENT].append(_drop_batch(AGENT, agent.server, shipped, settings.batch_records))
            rounds[FULL].append(
                _drop_batch(FULL, contenders[1].server, full, settings.batch_records)
            )
        results["batch"] = [_median_round(rounds[AGENT]), _median_round(rounds[FULL])]
    finally:
        for contender in contenders:
            contender.server.stop()
    results["batch"] += _peer_batches(peer, settings.batch_records, settings.batch_rounds)
    pipelines = micro.agent_pipeline(shipped), micro.agent_pipeline(full)
    results["micro"] = [asdict(m) for m in micro.run_micro(*pipelines, peer, settings.micro_calls)]
    if before is not None:
        results["before_after"] = before_after.compare(
            before, rounds=1 if quick else 7, calls=10 if quick else 200
        )
    results["runtime_bench"] = _runtime_bench(quick)
    results["validation"] = validation_bench.run(quick, workdir)
    results["memory_imports"] = memory.breakdown(REPO, quick)
    results["install"] = [asdict(s) for s in install_size.measure_all(settings.build_venvs)]
    results["install_largest_agent"] = install_size.largest_packages("agent", 6)
    results["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="agent vs sklearn/onnxruntime services")
    parser.add_argument(
        "--quick", action="store_true", help="every benchmark briefly, to check the suite runs (CI)"
    )
    parser.add_argument(
        "--json", type=Path, help="results file (default: bench/results.json; quick: a temp folder)"
    )
    parser.add_argument(
        "--markdown", type=Path, help="report (default: docs/benchmarks.md; quick: a temp folder)"
    )
    parser.add_argument(
        "--before",
        help="a commit to compare the request path's stages against, in the same run",
    )
    args = parser.parse_args(argv)
    default_dir = (Path(tempfile.gettempdir()) / "edge-agent-bench-quick") if args.quick else None
    json_path = args.json or (
        default_dir / "results.json" if default_dir else REPO / "bench" / "results.json"
    )
    markdown_path = args.markdown or (
        default_dir / "benchmarks.md" if default_dir else REPO / "docs" / "benchmarks.md"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as workdir:
        results = run(args.quick, Path(workdir), args.before)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    for path in (json_path, markdown_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    markdown_path.write_text(render(results))
    print(f"wrote {json_path} and {markdown_path} in {results['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
