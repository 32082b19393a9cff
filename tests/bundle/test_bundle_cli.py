"""``edge-agent keys`` and the trust side of ``edge-agent bundle``, on real files."""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from bundle_factory import unsigned_bundle, write_dir

from agent.bundle.manifest import MODEL_FILE
from agent.cli import bundle_trust_cmd, main
from agent.errors import AgentError, DigestMismatch, UntrustedKey
from agent.registry.index import INDEX_FILE


def bundle_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent bundle")
    bundle_trust_cmd.register(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    assert main(["keys", "generate", "--out", str(tmp_path / "keys"), "--name", "pub"]) == 0
    out = capsys.readouterr().out
    assert "key id:" in out and "public_key:" in out
    return tmp_path / "keys" / "pub.key", tmp_path / "keys" / "pub.pub"


def test_keys_generate_refuses_overwrite(keys: tuple[Path, Path], tmp_path: Path) -> None:
    code = main(["keys", "generate", "--out", str(tmp_path / "keys"), "--name", "pub"])
    assert code == 2


def test_sign_verify_inspect_publish(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = keys
    bundle = write_dir(unsigned_bundle(version="1.2.0"), tmp_path / "bundle")
    assert bundle_cli("sign", str(bundle), "--key", str(private)) == 0
    assert bundle_cli("verify", str(bundle), "--trust", str(public)) == 0
    assert "OK sepsis 1.2.0" in capsys.readouterr().out
    assert bundle_cli("inspect", str(bundle)) == 0
    out = capsys.readouterr().out
    assert "sepsis 1.2.0" in out and "claimed; not verified" in out and "[ok]" in out
    registry = tmp_path / "registry"
    url = registry.as_uri()
    assert bundle_cli("publish", str(bundle), url, "--key", str(private)) == 0
    assert json.loads((registry / INDEX_FILE).read_bytes())["version"] == 1
    assert bundle_cli("refresh-index", url, "--key", str(private), "--expires-days", "2") == 0
    assert json.loads((registry / INDEX_FILE).read_bytes())["version"] == 2


def test_verify_refuses_a_tampered_bundle(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    bundle = write_dir(unsigned_bundle(), tmp_path / "bundle")
    bundle_cli("sign", str(bundle), "--key", str(private))
    (bundle / MODEL_FILE).write_bytes(b"swapped")
    with pytest.raises(DigestMismatch):
        bundle_cli("verify", str(bundle), "--trust", str(public))


def test_verify_refuses_an_untrusted_signer(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, _ = keys
    main(["keys", "generate", "--out", str(tmp_path / "other"), "--name", "x"])
    bundle = write_dir(unsigned_bundle(), tmp_path / "bundle")
    bundle_cli("sign", str(bundle), "--key", str(private))
    with pytest.raises(UntrustedKey):
        bundle_cli("verify", str(bundle), "--trust", str(tmp_path / "other" / "x.pub"))


def test_inspect_shows_an_unsigned_bundle_and_mismatches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_dir(unsigned_bundle(), tmp_path / "bundle")
    (bundle / MODEL_FILE).write_bytes(b"changed")
    assert bundle_cli("inspect", str(bundle)) == 0
    out = capsys.readouterr().out
    assert "unsigned" in out and "MISMATCH" in out


def test_sign_wants_a_directory(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(AgentError, match="directory"):
        bundle_cli("sign", str(tmp_path / "b.tar.gz"), "--key", str(keys[0]))


@pytest.mark.integration
def test_bundle_verify_refuses_an_inflating_pax_header_without_allocating_it(
    tmp_path: Path,
) -> None:
    """A 300 MB PAX header (about 300 kB of gzip) made `bundle verify` allocate it whole
    before refusing; the real CLI process must refuse it from the header's size field."""
    size = 300_000_000
    archive = tmp_path / "bomb.tar.gz"
    header = tarfile.TarInfo("PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = size
    record = b"30 comment=aaaaaaaaaaaaaaaaaa\n"
    with gzip.open(archive, "wb", compresslevel=9) as out:
        out.write(header.tobuf(tarfile.USTAR_FORMAT) + record)
        left = size - len(record) + (-size % 512)
        zeros = bytes(1 << 20)
        while left > 0:
            out.write(zeros[: min(left, len(zeros))])
            left -= len(zeros)
        member = tarfile.TarInfo(MODEL_FILE)
        member.size = 1
        out.write(member.tobuf(tarfile.USTAR_FORMAT) + b"x".ljust(512, b"\0") + bytes(1024))
    public = Path(__file__).resolve().parents[2] / "fixtures/keys/demo-publisher.pub"
    # Measured from a small parent: on Linux a child's peak RSS starts from its parent's at
    # fork (the pytest process, large late in a run), so the CLI is started by a fresh one.
    measure = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "err = p.stderr.read()\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "sys.stderr.buffer.write(err)\n"
        "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
    )
    verify = [
        sys.executable,
        "-m",
        "agent.cli",
        "bundle",
        "verify",
        str(archive),
        "--trust",
        str(public),
    ]
    result = subprocess.run(
        [sys.executable, "-c", measure, *verify], capture_output=True, cwd=tmp_path, timeout=120
    )
    code, peak_kb = (int(x) for x in result.stdout.split())
    stderr = result.stderr.decode()
    assert code != 0
    assert "extended header" in stderr, stderr
    assert peak_kb < 150 * 1024, f"peak RSS {peak_kb // 1024} MB"
