"""The Ansible role, applied for real to a throwaway root.

Needs ``ansible-playbook`` (on PATH, or the path in $ANSIBLE_PLAYBOOK) and, for the lint
test, ``ansible-lint`` (on PATH or $ANSIBLE_LINT); each test says so and skips without them.
The apply test builds a wheelhouse with deploy/build-wheelhouse.sh (pip's cache and the
configured index make that a few seconds) inside a temp root, runs site.yml with ``-c local``
into that root with no package index (air-gapped mode, hash-checked wheels), checks what was
laid down, starts the installed agent on loopback, then applies the role again and expects
nothing to change. systemd is not involved: the role skips service actions under a
throwaway root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
VERSION = "0.1.0"
# The demo site (config/demo.yaml): its publisher key, model, mapping and file registry.
DEMO = yaml.safe_load((REPO / "config/demo.yaml").read_text())
DEMO_KEY = DEMO["trust"]["keys"][0]
DEMO_MODEL = DEMO["models"][0]["name"]
DEMO_REGISTRY = f"file://{REPO}/fixtures/registry"


def _tool(env_var: str, name: str) -> str | None:
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which(name)


ANSIBLE_PLAYBOOK = _tool("ANSIBLE_PLAYBOOK", "ansible-playbook")
ANSIBLE_LINT = _tool("ANSIBLE_LINT", "ansible-lint")
needs_ansible = pytest.mark.skipif(
    ANSIBLE_PLAYBOOK is None,
    reason="ansible-playbook not found (pip install ansible-core; or set ANSIBLE_PLAYBOOK)",
)


def _ansible_env() -> dict[str, str]:
    """The environment of an ansible run: no PIP_* of ours leaks into the role's pip, so the
    air-gapped install sees only the wheelhouse; the tool's own folder on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    assert ANSIBLE_PLAYBOOK is not None
    tool_dir = str(Path(ANSIBLE_PLAYBOOK).parent)
    env["PATH"] = tool_dir + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_ROLES_PATH"] = str(ANSIBLE_DIR / "roles")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_RETRY_FILES_ENABLED"] = "0"
    env["ANSIBLE_LOCALHOST_WARNING"] = "0"
    return env


def _interpreter_of(script: str) -> str:
    """The Python an ansible entry point runs with (its shebang): modules run with it too."""
    first = Path(script).read_text().splitlines()[0]
    return first.removeprefix("#!").strip().split()[0] if first.startswith("#!") else sys.executable


@needs_ansible
def test_playbook_syntax() -> None:
    assert ANSIBLE_PLAYBOOK is not None
    result = subprocess.run(
        [ANSIBLE_PLAYBOOK, "--syntax-check", "site.yml"],
        cwd=ANSIBLE_DIR,
        env=_ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    ANSIBLE_LINT is None,
    reason="ansible-lint not found (pip install ansible-lint; or set ANSIBLE_LINT)",
)
def test_role_is_lint_clean() -> None:
    assert ANSIBLE_LINT is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PATH"] = str(Path(ANSIBLE_LINT).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(
        [ANSIBLE_LINT, "--offline", "--profile", "production"],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass(frozen=True)
class Applied:
    root: Path
    inventory: Path
    extra_vars: Path
    keyid: str
    first_run: str


def _play(inventory: Path, extra_vars: Path, *more_vars: str) -> subprocess.CompletedProcess[str]:
    assert ANSIBLE_PLAYBOOK is not None
    more = [arg for value in more_vars for arg in ("-e", value)]
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(inventory), "-e", f"@{extra_vars}", *more, "site.yml"],
        cwd=ANSIBLE_DIR,
        env=_ansible_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s+:\s+(.*)$", output, re.MULTILINE)
    assert match, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Applied:
    """site.yml applied once, air-gapped, to a fresh root."""
    assert ANSIBLE_PLAYBOOK is not None
    work = tmp_path_factory.mktemp("deploy")
    root = work / "root"
    # Built straight into the host's wheelhouse folder, as a site with the wheelhouse on a
    # share would have it: copying 35 wheels through Ansible would double the test's time.
    wheelhouse = root / "opt/edge-agent/wheelhouse" / VERSION
    subprocess.run(
        [str(REPO / "deploy" / "build-wheelhouse.sh"), str(wheelhouse)],
        env={**os.environ, "PYTHON": sys.executable},
        check=True,
        capture_output=True,
        timeout=300,
    )
    key_file = (REPO / "config" / DEMO_KEY["public_key_file"]).resolve()
    mapping_file = REPO / "config" / DEMO["models"][0]["mapping"]

    inventory = work / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "edge_agents": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": _interpreter_of(ANSIBLE_PLAYBOOK),
                            # everything goes under a temp root the test owns
                            "ansible_become": False,
                        }
                    }
                }
            }
        )
    )
    extra_vars = work / "vars.yml"
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout
    extra_vars.write_text(
        yaml.safe_dump(
            {
                "edge_agent_root": str(root),
                "edge_agent_version": VERSION,
                "edge_agent_wheelhouse_src": "",
                "edge_agent_user": subprocess.run(
                    ["id", "-un"], capture_output=True, text=True, check=True
                ).stdout.strip(),
                "edge_agent_group": group.strip(),
                "edge_agent_site": "ci",
                "edge_agent_trusted_keys": [
                    {"id": DEMO_KEY["id"], "src": str(key_file), "comment": "demo publisher"}
                ],
                "edge_agent_models": [
                    {"name": DEMO_MODEL, "registry": "demo", "mapping_src": str(mapping_file)}
                ],
                "edge_agent_drop_folder_enabled": True,
                "edge_agent_drop_folder_extra": {"model": DEMO_MODEL},
                "edge_agent_drop_group": group.strip(),
                "edge_agent_ip_address_allow": ["10.20.0.0/16"],
                "edge_agent_read_write_paths": ["/srv/share/edge-agent-drop"],
                "edge_agent_audit_hmac_key": "00" * 32,
                "edge_agent_audit_extra": {"write_before_answer": True},
                "edge_agent_registries": [
                    {"name": "demo", "url": DEMO_REGISTRY},
                    {
                        "name": "hospital",
                        "url": "https://registry.invalid/models",
                        "ca_file": "tls/registry-ca.pem",
                    },
                ],
                "edge_agent_config_files": [{"dest": "tls/registry-ca.pem", "content": "(a CA)\n"}],
                "edge_agent_config_extra": {"limits": {"drain_timeout": 5.0}},
            }
        )
    )

    result = _play(inventory, extra_vars)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return Applied(root, inventory, extra_vars, DEMO_KEY["id"], result.stdout)


@needs_ansible
@pytest.mark.integration
def test_role_lays_down_release_config_and_unit(applied: Applied) -> None:
    root = applied.root
    current = root / "opt/edge-agent/current"
    assert os.readlink(current) == f"venvs/{VERSION}"
    assert (current / "bin/edge-agent").is_file()
    config_file = root / "etc/edge-agent/agent.yaml"
    config = yaml.safe_load(config_file.read_text())
    assert config["store"]["root"] == "/var/lib/edge-agent/store"
    assert config["trust"]["keys"][0]["public_key_file"] == f"keys/{applied.keyid}.pub"
    assert config["models"] == [
        {"name": DEMO_MODEL, "registry": "demo", "mapping": f"mappings/{DEMO_MODEL}.yaml"}
    ]
    assert config["audit"] == {
        "path": "/var/log/edge-agent/audit.jsonl",
        "hmac_key_file": "secrets/audit-hmac.key",
        "write_before_answer": True,
    }
    assert config["limits"] == {"drain_timeout": 5.0}
    assert config["drop_folder"]["results_group_readable"] is True  # 0640, setgid folders
    assert config["registries"][1]["ca_file"] == "tls/registry-ca.pem"
    secrets = ("agent.yaml", "secrets/audit-hmac.key", "tls/registry-ca.pem")
    for secret in (root / "etc/edge-agent" / name for name in secrets):
        assert secret.stat().st_mode & 0o777 == 0o640
    for folder in ("inbox", "outbox", "processed", "failed", "state"):
        # setgid to the drop group, so files an interface engine drops stay in its group
        assert (root / "var/spool/edge-agent" / folder).stat().st_mode & 0o7777 == 0o2770
    unit = root / "etc/systemd/system/edge-agent.service"
    assert unit.read_text() == (REPO / "deploy/systemd/edge-agent.service").read_text()
    drop_in = (root / "etc/systemd/system/edge-agent.service.d/10-site.conf").read_text()
    assert "TimeoutStopSec=30" in drop_in  # drain_timeout 5 s + 25 s
    assert "UMask=0027" in drop_in
    assert "IPAddressDeny=any\nIPAddressAllow=localhost 10.20.0.0/16\n" in drop_in
    assert "ReadWritePaths=/srv/share/edge-agent-drop\n" in drop_in
    assert _recap(applied.first_run)["changed"] > 0


@needs_ansible
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_installed_unit_and_site_drop_in_verify(applied: Applied, tmp_path: Path) -> None:
    """The unit with the role's drop-in beside it (as systemd-analyze loads it), pointed at
    the release installed in the throwaway root."""
    installed = applied.root / "etc/systemd/system"
    unit = (installed / "edge-agent.service").read_text()
    (tmp_path / "edge-agent.service").write_text(
        unit.replace("ExecStart=/", f"ExecStart={applied.root}/", 1)
    )
    shutil.copytree(installed / "edge-agent.service.d", tmp_path / "edge-agent.service.d")

    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "edge-agent.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "edge-agent.service" not in result.stderr, result.stderr


@needs_ansible
@pytest.mark.integration
def test_laid_down_config_passes_the_agents_own_check(applied: Applied) -> None:
    binary = applied.root / "opt/edge-agent/current/bin/edge-agent"
    result = subprocess.run(
        [str(binary), "config", "check", str(applied.root / "etc/edge-agent/agent.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def running_agent(applied: Applied, tmp_path: Path) -> Iterator[str]:
    """The installed agent, with the laid-down key and mapping in a small config of the test's
    own (a store in tmp, the demo's file registry), on a loopback port."""
    etc = applied.root / "etc/edge-agent"
    port = _free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"root": str(tmp_path / "store")},
                "trust": {
                    "keys": [
                        {
                            "id": applied.keyid,
                            "public_key_file": str(etc / f"keys/{applied.keyid}.pub"),
                        }
                    ]
                },
                "registries": [{"name": "demo", "url": DEMO_REGISTRY}],
                "models": [
                    {
                        "name": DEMO_MODEL,
                        "registry": "demo",
                        "mapping": str(etc / f"mappings/{DEMO_MODEL}.yaml"),
                    }
                ],
                "http": {"port": port},
                "logging": {"format": "json"},
                "limits": {"drain_timeout": 5.0},
            }
        )
    )
    binary = applied.root / "opt/edge-agent/current/bin/edge-agent"
    process = subprocess.Popen(
        [str(binary), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the installed agent exited with {process.returncode}:\n{output}")
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            process.stdout.close()


@needs_ansible
@pytest.mark.integration
def test_installed_agent_pulls_the_demo_model_and_scores(running_agent: str) -> None:
    health = httpx.get(f"{running_agent}/healthz", timeout=5)
    # the listeners open first; the first pull follows in the background
    deadline = time.monotonic() + 30
    while (ready := httpx.get(f"{running_agent}/readyz", timeout=5)).status_code != 200:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    scored = httpx.post(
        f"{running_agent}/v1/models/{DEMO_MODEL}/predict?as_of=2026-03-15T12:00:00Z",
        content=(REPO / "fixtures/fhir/demo-patient-bundle.json").read_bytes(),
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )

    assert health.status_code == 200
    assert ready.status_code == 200, ready.text
    assert json.loads(ready.text)["models"] == {DEMO_MODEL: True}
    assert scored.status_code == 200, scored.text
    assert 0.0 <= scored.json()["predictions"][0]["outputs"]["probability_1"] <= 1.0


@needs_ansible
@pytest.mark.integration
def test_second_apply_changes_nothing(applied: Applied) -> None:
    result = _play(applied.inventory, applied.extra_vars)

    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    recap = _recap(result.stdout)
    assert recap["changed"] == 0, result.stdout[-6000:]
    assert recap["failed"] == 0


def _status_of(output: str, task: str) -> str:
    """``ok`` or ``changed``: what a play said of ``task``."""
    match = re.search(rf"TASK \[edge_agent : {re.escape(task)}\][^\n]*\n(\w+):", output)
    assert match, output[-6000:]
    return match.group(1)


@needs_ansible
@pytest.mark.integration
def test_a_token_change_reloads_and_a_listener_change_restarts(
    applied: Applied, tmp_path: Path
) -> None:
    """A reload applies new bearer tokens; an MLLP setting is built at start, so a change to
    it must restart the agent (the handler is notified), not leave a SIGHUP'd agent running
    the old listener (docs/operations.md, "Changing the config")."""
    settings = applied.root / "etc/edge-agent/restart-settings.json"
    before = settings.read_text()
    token = tmp_path / "token.yml"
    token.write_text(yaml.safe_dump({"edge_agent_http_bearer_token_sha256": ["ab" * 32]}))
    rotated = _play(applied.inventory, applied.extra_vars, f"@{token}")
    assert rotated.returncode == 0, rotated.stdout[-6000:]
    assert _status_of(rotated.stdout, "Write the agent configuration") == "changed"
    assert _status_of(rotated.stdout, "Note the settings only a restart applies") == "ok"
    assert settings.read_text() == before
    listener = tmp_path / "mllp.yml"
    listener.write_text(yaml.safe_dump({"edge_agent_mllp": {"enabled": False, "port": 2576}}))
    moved = _play(applied.inventory, applied.extra_vars, f"@{listener}")
    assert moved.returncode == 0, moved.stdout[-6000:]
    assert _status_of(moved.stdout, "Note the settings only a restart applies") == "changed"
    assert '"port": 2576' in settings.read_text()


@needs_ansible
@pytest.mark.integration
def test_failed_health_check_rolls_back_to_the_previous_release(
    applied: Applied, tmp_path: Path
) -> None:
    """Upgrade from a (pretend) 0.0.9 to this release with no agent answering: the role must
    point ``current`` back at 0.0.9 and fail. Runs after the tests above: it leaves the root
    on 0.0.9."""
    releases = applied.root / "opt/edge-agent/venvs"
    (releases / "0.0.9").mkdir()
    current = applied.root / "opt/edge-agent/current"
    current.unlink()
    current.symlink_to("venvs/0.0.9")
    check = tmp_path / "health.yml"
    check.write_text(
        yaml.safe_dump(
            {
                "edge_agent_health_check": True,
                "edge_agent_http_port": _free_port(),  # nothing listens there
                "edge_agent_health_retries": 2,
                "edge_agent_health_delay": 1,
            }
        )
    )
    result = _play(applied.inventory, applied.extra_vars, f"@{check}")

    assert result.returncode != 0
    assert f"edge-agent {VERSION} did not answer /healthz" in result.stdout, result.stdout[-4000:]
    assert "rolled back to 0.0.9" in result.stdout
    assert os.readlink(current) == "venvs/0.0.9"
    assert (releases / VERSION).is_dir()  # kept for the next attempt


@needs_ansible
@pytest.mark.integration
def test_uninstall_keeps_the_data_unless_purged(applied: Applied) -> None:
    """Runs last: it removes what the tests above installed."""
    removed = _play(applied.inventory, applied.extra_vars, "edge_agent_state=absent")

    assert removed.returncode == 0, removed.stdout[-4000:]
    root = applied.root
    assert not (root / "opt/edge-agent").exists()
    assert not (root / "etc/systemd/system/edge-agent.service").exists()
    assert not (root / "etc/systemd/system/edge-agent.service.d").exists()
    kept = ["etc/edge-agent", "var/lib/edge-agent", "var/spool/edge-agent", "var/log/edge-agent"]
    assert all((root / path).is_dir() for path in kept)

    purged = _play(
        applied.inventory,
        applied.extra_vars,
        "edge_agent_state=absent",
        '{"edge_agent_purge_data": true}',
    )

    assert purged.returncode == 0, purged.stdout[-4000:]
    assert not any((root / path).exists() for path in kept)
