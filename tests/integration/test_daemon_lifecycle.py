"""The daemon's lifecycle on the real `edge-agent serve` process: SIGHUP reloads (good and
broken configs), SIGTERM drains in-flight requests within the bound, a second SIGTERM
forces, and sd_notify reaches a real AF_UNIX datagram socket."""

from __future__ import annotations

import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.agent_process import AgentProcess, start_agent
from tests.integration.reliability_support import (
    FHIR,
    PATIENT_BUNDLE,
    PREDICT,
    VITALS_ONLY,
    reliability_root,
    wait_for,
)

pytestmark = pytest.mark.integration

PHI = ("SYN-000417", "Testpatient", "Avery", "739b45d0", "1954-07-22")


class Traffic:
    """Scores the demo patient bundle in a loop from one thread; counts every outcome."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._stop = threading.Event()
        self.statuses: list[int | str] = []
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self._base_url, timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    status: int | str = client.post(
                        PREDICT, content=PATIENT_BUNDLE, headers=FHIR
                    ).status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                self.statuses.append(status)


def _wbc(client: httpx.Client) -> float:
    response = client.post(PREDICT + "&explain=true", content=VITALS_ONLY, headers=FHIR)
    assert response.status_code == 200, response.text
    explanation = response.json()["predictions"][0]["explanation"]
    value: float = next(f["model_value"] for f in explanation if f["feature"] == "wbc")
    return value


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    process = start_agent(reliability_root(tmp_path))
    yield process
    process.stop(signal.SIGKILL)


def test_sighup_with_a_changed_mapping_takes_effect_without_dropping_requests(
    agent: AgentProcess,
) -> None:
    mapping_path = agent.config_path.parent / "mappings/demo-site.yaml"
    with agent.client() as client:
        median = _wbc(client)
        assert median != 42.0
        text = mapping_path.read_text()
        wbc_median = (
            "unit: 10*3/uL                         # same number as the model's 10*9/L\n"
            "    window: 72h\n    missing: median"
        )
        assert wbc_median in text
        with Traffic(agent.base_url) as traffic:
            wait_for(lambda: len(traffic.statuses) >= 5, 10, "traffic to flow")
            mapping_path.write_text(
                text.replace(wbc_median, wbc_median.replace("median", "constant\n    constant: 42"))
            )
            agent.process.send_signal(signal.SIGHUP)
            wait_for(lambda: _wbc(client) == 42.0, 10, "the new mapping to serve")
            before = len(traffic.statuses)
            wait_for(lambda: len(traffic.statuses) >= before + 5, 10, "traffic after reload")
    assert traffic.statuses and set(traffic.statuses) == {200}, traffic.statuses
    assert '"configuration reloaded"' in agent.log_text()


def test_sighup_with_a_broken_config_is_refused_and_the_old_one_serves(
    agent: AgentProcess,
) -> None:
    config = yaml.safe_load(agent.config_path.read_text())
    config["http"]["prot"] = 9  # a typo: the reload must be refused, naming the key
    agent.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    mapping_path = agent.config_path.parent / "mappings/demo-site.yaml"
    with agent.client() as client, Traffic(agent.base_url) as traffic:
        client.post(PREDICT, content=PATIENT_BUNDLE, headers=FHIR).raise_for_status()
        agent.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in agent.log_text(), 10, "the refusal to be logged")
        # A broken mapping under a valid config is refused the same way.
        del config["http"]["prot"]
        agent.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        mapping_path.write_text(mapping_path.read_text().replace("reduce: latest", "reduce: often"))
        agent.process.send_signal(signal.SIGHUP)
        wait_for(lambda: agent.log_text().count("reload refused") >= 2, 10, "the second refusal")
        wait_for(lambda: len(traffic.statuses) >= 10, 10, "traffic after the refusals")
        assert client.post(PREDICT, content=PATIENT_BUNDLE, headers=FHIR).status_code == 200
    log = agent.log_text()
    assert "http.prot" in log and '"reason": "config"' in log
    assert '"reason": "mapping"' in log and "demo-site.yaml" in log
    assert "configuration reloaded" not in log
    assert not any(value in log for value in PHI)
    assert set(traffic.statuses) == {200}, traffic.statuses


def _slow_post(base_url: str, release: threading.Event, results: list[int | str]) -> None:
    """A predict request whose body arrives in two halves, the second once ``release``
    is set: the request is in flight (inside the app) until then."""
    half = len(PATIENT_BUNDLE) // 2

    def body() -> Iterator[bytes]:
        yield PATIENT_BUNDLE[:half]
        release.wait(30)
        yield PATIENT_BUNDLE[half:]

    try:
        response = httpx.post(base_url + PREDICT, content=body(), headers=FHIR, timeout=30)
        results.append(response.status_code)
    except httpx.TransportError as exc:
        results.append(type(exc).__name__)


def test_sigterm_drains_in_flight_requests_and_exits_0_within_the_bound(
    agent: AgentProcess,
) -> None:
    release, results = threading.Event(), list[int | str]()
    threads = [
        threading.Thread(target=_slow_post, args=(agent.base_url, release, results))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every request has sent its first half
    started = time.monotonic()
    agent.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    with pytest.raises(httpx.TransportError):  # no new connections while draining
        httpx.get(agent.base_url + "/healthz", timeout=2)
    release.set()
    for thread in threads:
        thread.join(30)
    code = agent.process.wait(15)
    elapsed = time.monotonic() - started
    assert results == [200] * 4
    assert code == 0, agent.log_text()
    assert elapsed < 5.0 + 2.0  # limits.drain_timeout plus the pipeline's own stop
    assert '"stopped"' in agent.log_text()


def test_second_sigterm_forces_the_exit(tmp_path: Path) -> None:
    config = reliability_root(tmp_path, edit=lambda c: c["limits"].update(drain_timeout=30.0))
    agent = start_agent(config)
    try:
        release, results = threading.Event(), list[int | str]()
        stuck = threading.Thread(target=_slow_post, args=(agent.base_url, release, results))
        stuck.start()
        time.sleep(0.5)
        started = time.monotonic()
        agent.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert agent.process.poll() is None  # still draining the stuck request
        agent.process.send_signal(signal.SIGTERM)
        agent.process.wait(10)
        assert time.monotonic() - started < 6.0  # far below the 30 s drain bound
        assert "second stop signal" in agent.log_text()
    finally:
        release.set()
        stuck.join(30)
        agent.stop(signal.SIGKILL)


def test_sd_notify_ready_watchdog_reload_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="notify") as short:
        address = str(Path(short) / "notify.sock")
        datagrams: list[str] = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(address)
            server.settimeout(0.2)
            done = threading.Event()

            def receive() -> None:
                while not done.is_set():
                    try:
                        datagrams.append(server.recv(4096).decode())
                    except TimeoutError:
                        continue

            receiver = threading.Thread(target=receive)
            receiver.start()
            monkeypatch.setenv("NOTIFY_SOCKET", address)
            monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
            monkeypatch.delenv("WATCHDOG_PID", raising=False)
            agent = start_agent(reliability_root(tmp_path))
            try:
                wait_for(lambda: "READY=1" in datagrams, 10, "READY=1")
                wait_for(lambda: datagrams.count("WATCHDOG=1") >= 3, 5, "watchdog pings")
                agent.process.send_signal(signal.SIGHUP)
                wait_for(lambda: "RELOADING=1" in datagrams, 5, "RELOADING=1")
                assert agent.stop() == 0
                wait_for(lambda: "STOPPING=1" in datagrams, 5, "STOPPING=1")
            finally:
                done.set()
                receiver.join(5)
                agent.stop(signal.SIGKILL)
    ready = datagrams.index("READY=1")
    assert datagrams.index("WATCHDOG=1") > ready
    reloading = datagrams.index("RELOADING=1")
    assert "READY=1" in datagrams[reloading:]  # ready again after the reload
    assert datagrams[-1] == "STOPPING=1" or "STOPPING=1" in datagrams[reloading:]
