"""The unit's sandbox, applied by a real systemd to what the agent does at its core.

A transient service (``systemd-run``) gets every sandbox setting of
deploy/systemd/edge-agent.service and runs wasmtime's JIT (compile and call a module) and the
sockets the agent needs (a loopback TCP listener, a Unix datagram socket as for sd_notify).
The second test shows why the unit leaves MemoryDenyWriteExecute off: with it on, wasmtime
cannot compile. Needs systemd as PID 1 and root; skipped otherwise (containers usually).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_unit_file import UNIT, unit_settings

# The [Service] settings that shape the sandbox (not the paths, user or lifecycle).
SANDBOX_KEYS = frozenset(
    {
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "UMask",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateIPC",
        "PrivateMounts",
        "PrivateUsers",
        "ProtectHostname",
        "ProtectClock",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "RemoveIPC",
        "MemoryDenyWriteExecute",
        "RestrictAddressFamilies",
        "SystemCallArchitectures",
        "SystemCallFilter",
        "SystemCallErrorNumber",
        "MemoryMax",
        "TasksMax",
        "LimitNOFILE",
    }
)

CORE_WORK = """
import socket, wasmtime
engine = wasmtime.Engine()
store = wasmtime.Store(engine)
module = wasmtime.Module(engine, '(module (func (export "add") (param i32 i32) (result i32)'
                                 ' local.get 0 local.get 1 i32.add))')
assert wasmtime.Instance(store, module, []).exports(store)["add"](store, 2, 3) == 5
with socket.socket() as server:
    server.bind(("127.0.0.1", 0)); server.listen()
    with socket.create_connection(server.getsockname()):
        pass
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()
print("core work ok")
"""

SYSTEMD_RUN = shutil.which("systemd-run")
pytestmark = pytest.mark.skipif(
    SYSTEMD_RUN is None or not Path("/run/systemd/system").is_dir() or os.geteuid() != 0,
    reason="needs systemd as PID 1, systemd-run and root (a transient service is started)",
)


def _sandbox_properties() -> list[str]:
    settings = unit_settings(UNIT.read_text())
    properties = [f"{key}={value}" for key in sorted(SANDBOX_KEYS) for value in settings[key]]
    interpreter = Path(sys.executable).resolve()
    if interpreter.is_relative_to("/root") or interpreter.is_relative_to("/home"):
        # The test's Python lives where ProtectHome hides it; the agent's never does.
        properties.append("ProtectHome=no")
    else:
        properties.append("DynamicUser=yes")
    return properties


def _run_core_work(*extra: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_RUN is not None
    command = [SYSTEMD_RUN, "--quiet", "--wait", "--pipe", "--collect"]
    for prop in [*_sandbox_properties(), *extra]:
        command += ["-p", prop]
    command += [sys.executable, "-c", CORE_WORK]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.integration
def test_wasmtime_and_sockets_work_in_the_unit_sandbox() -> None:
    result = _run_core_work()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "core work ok" in result.stdout


@pytest.mark.integration
def test_memory_deny_write_execute_would_break_wasmtime() -> None:
    result = _run_core_work("MemoryDenyWriteExecute=yes")

    assert result.returncode != 0
    assert "unable to make memory executable" in result.stdout + result.stderr
