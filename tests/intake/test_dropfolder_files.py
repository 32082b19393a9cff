"""How the drop folder opens, settles and reads a file (docs/drop-folder.md, "What is read").

Real files, FIFOs, symlinks and hard links in real folders. The swap tests place the swap
exactly between the scan that saw the file settle and the claim, the window a sender races
for: the scan and the claim are called one after the other, as the worker does."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.batch.config import OutputKind
from agent.batch.engine import BatchEngine, BatchSettings
from agent.batch.items import UnreadableFile
from agent.intake.dropfolder.folder import DropFolder
from agent.limits import Limits
from agent.types import IntakePath
from tests.intake.dropfolder_support import RecordScorer, folder_config

DEADLINE = 10.0  # seconds any single wait may take before the test fails
SECRET = "PID|1||ROOTONLY^^^H"  # what a file only root may read says; must never be scored


def hl7_message(number: int, value: float = 70.0) -> str:
    return (
        f"MSH|^~\\&|MON|H|EDGE|H|2024||ORU^R01|C{number:04d}|P|2.5\r"
        f"PID|1||M{number}\rOBX|1|NM|x||{value}|/min\r"
    )


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


@pytest.fixture
def idle(tmp_path: Path) -> DropFolder:
    """A drop folder whose worker does not run: the test makes its steps."""
    drop = DropFolder(folder_config(tmp_path, settle_seconds=0.0), RecordScorer(), Limits())
    for folder in ("inbox", "outbox", "processed", "failed", "state/jobs"):
        (tmp_path / folder).mkdir(parents=True)
    return drop


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[DropFolder, Path]]:
    config = folder_config(tmp_path, settle_seconds=0.3, incomplete_seconds=2.0)
    drop = DropFolder(config, RecordScorer(), Limits())
    drop.start()
    try:
        yield drop, tmp_path
    finally:
        drop.stop()


def _secret_file(tmp_path: Path) -> Path:
    secret = tmp_path / "root-only.hl7"
    secret.write_text(hl7_message(1).replace("PID|1||M1", SECRET))
    secret.chmod(0o600)
    return secret


def _claim_after_swap(drop: DropFolder, name: str, swap: Callable[[Path], None]) -> None:
    """The scan sees ``name`` settled, the sender swaps it, the worker claims it; the claim
    must finish (a FIFO must not wedge it)."""
    inbox = drop.config.inbox
    assert drop._settled_files() == [name]
    swap(inbox / name)
    worker = threading.Thread(target=drop._claim, args=(name,), daemon=True)
    worker.start()
    worker.join(DEADLINE)
    assert not worker.is_alive(), "the claim blocked on what the sender swapped in"


def _refused(drop: DropFolder, name: str) -> dict[str, Any]:
    """The swapped entry is in failed/ with its report; nothing was scored or published."""
    root = drop.config.failed.parent
    report = _read_json(root / "failed" / f"{name}.error.json")
    assert report is not None, sorted(p.name for p in (root / "failed").iterdir())
    assert os.path.lexists(root / "failed" / name)
    assert list((root / "outbox").iterdir()) == []
    assert list((root / "state/jobs").iterdir()) == []
    assert list((root / "inbox").iterdir()) == []
    assert isinstance(drop.engine.plane, RecordScorer) and drop.engine.plane.calls == 0
    return dict(report)


def _symlink_to(target: Path) -> Callable[[Path], None]:
    def swap(path: Path) -> None:
        path.unlink()
        path.symlink_to(target)

    return swap


def test_swap_for_symlink_to_fifo_is_refused_without_blocking(
    idle: DropFolder, tmp_path: Path
) -> None:
    (tmp_path / "inbox/ward.hl7").write_text(hl7_message(1))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    try:
        _claim_after_swap(idle, "ward.hl7", _symlink_to(fifo))
    finally:
        _release(fifo)
    assert _refused(idle, "ward.hl7")["reason"] == "not_regular"
    assert os.readlink(tmp_path / "failed/ward.hl7") == str(fifo)  # the link, not its target


def _release(fifo: Path) -> None:
    """Open ``fifo`` as a writer, for a moment: a reader blocked in ``open`` (the claim
    of a failing run) returns, so the test process can end."""
    with contextlib.suppress(OSError):  # no reader: nothing is blocked
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_swap_for_symlink_to_root_only_file_is_refused_unread(
    idle: DropFolder, tmp_path: Path
) -> None:
    (tmp_path / "inbox/ward.hl7").write_text(hl7_message(1))
    _claim_after_swap(idle, "ward.hl7", _symlink_to(_secret_file(tmp_path)))
    report = _refused(idle, "ward.hl7")
    assert report["reason"] == "not_regular"
    assert "ROOTONLY" not in json.dumps(report)


def test_swap_for_hard_link_to_root_only_file_is_refused_unread(
    idle: DropFolder, tmp_path: Path
) -> None:
    (tmp_path / "inbox/ward.hl7").write_text(hl7_message(1))
    secret = _secret_file(tmp_path)

    def swap(path: Path) -> None:
        path.unlink()
        os.link(secret, path)

    _claim_after_swap(idle, "ward.hl7", swap)
    assert _refused(idle, "ward.hl7")["reason"] == "not_the_scanned_file"


def test_swap_for_another_file_after_settling_is_refused(idle: DropFolder, tmp_path: Path) -> None:
    (tmp_path / "inbox/ward.hl7").write_text(hl7_message(1))

    def swap(path: Path) -> None:
        replacement = path.with_name(".replacement")
        replacement.write_text(hl7_message(2))
        os.replace(replacement, path)

    _claim_after_swap(idle, "ward.hl7", swap)
    assert _refused(idle, "ward.hl7")["reason"] == "not_the_scanned_file"


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        (lambda path, tmp: path.symlink_to(_secret_file(tmp)), "not_regular"),
        (lambda path, tmp: os.mkfifo(path), "not_regular"),
        (lambda path, tmp: os.link(_secret_file(tmp), path), "not_allowed"),
        (lambda path, tmp: (path.write_text(hl7_message(1)), path.chmod(0o666)), "not_allowed"),
        (
            lambda path, tmp: (path.write_text(hl7_message(1)), os.chown(path, 4321, -1)),
            "not_allowed",
        ),
    ],
    ids=["symlink", "fifo", "hard-link", "world-writable", "owner-not-allowed"],
)
def test_what_is_not_plainly_a_senders_file_goes_to_failed_unread(
    tmp_path: Path, prepare: Callable[[Path, Path], object], reason: str
) -> None:
    """Not only a swap: whatever lies in the inbox that is not a regular file with one
    link, not writable by all, owned by an allowed sender, is refused with a report, and
    the next file is scored as usual."""
    config = folder_config(tmp_path, settle_seconds=0.1, owners=[os.getuid()])
    drop = DropFolder(config, RecordScorer(), Limits())
    drop.start()
    try:
        prepare(tmp_path / "inbox/odd.hl7", tmp_path)
        report = wait_for(lambda: _read_json(tmp_path / "failed/odd.hl7.error.json"))
        assert report["reason"] == reason
        (tmp_path / "inbox/.next.tmp").write_text(hl7_message(2))
        (tmp_path / "inbox/.next.tmp").rename(tmp_path / "inbox/next.hl7")
        wait_for(lambda: _read_json(tmp_path / "outbox/next.hl7.report.json"))
    finally:
        drop.stop()
    results = (tmp_path / "outbox/next.hl7.results.ndjson").read_text()
    assert "ROOTONLY" not in results and not (tmp_path / "outbox/odd.hl7.report.json").exists()


def _batch(count: int, start: int = 1) -> str:
    return "".join(hl7_message(i) for i in range(start, start + count))


def test_writer_pausing_mid_batch_loses_nothing(running: tuple[DropFolder, Path]) -> None:
    """An HL7 batch whose writer pauses longer than the settle time: the file waits for
    its trailer, then all 200 messages are scored."""
    _, root = running
    target = root / "inbox/ward.hl7"
    with target.open("w") as stream:
        stream.write("FHS|^~\\&|MON|H\rBHS|^~\\&|MON|H\r" + _batch(100))
        stream.flush()
        time.sleep(1.2)  # the writer's pause: four settle times
        assert target.exists(), "taken before its trailer"
        stream.write(_batch(100, start=101) + "BTS|200\rFTS|1\r")
    report = wait_for(lambda: _read_json(root / "outbox/ward.hl7.report.json"))
    assert report["records"] == {"in": 200, "ok": 200, "failed": 0}


def test_json_document_waits_for_its_closing_bracket(running: tuple[DropFolder, Path]) -> None:
    _, root = running
    document = json.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {"resourceType": "Patient", "id": "p"}},
                {
                    "resource": {
                        "resourceType": "Observation",
                        "subject": {"reference": "Patient/p"},
                        "valueQuantity": {"value": 5},
                    }
                },
            ],
        }
    )
    target = root / "inbox/one.json"
    cut = document.index('{"resource": {"resourceType": "Observation"')
    with target.open("w") as stream:
        stream.write(document[:cut])
        stream.flush()
        time.sleep(1.2)
        assert target.exists(), "taken before its closing bracket"
        stream.write(document[cut:])
    report = wait_for(lambda: _read_json(root / "outbox/one.json.report.json"))
    assert report["records"] == {"in": 1, "ok": 1, "failed": 0}


def test_batch_never_closed_fails_as_incomplete(running: tuple[DropFolder, Path]) -> None:
    """A trailer that never comes: after ``incomplete_seconds`` the file fails whole, with
    a report, instead of waiting for ever or scoring a part as if it were all."""
    _, root = running
    (root / "inbox/cut.hl7").write_text("BHS|^~\\&|MON|H\r" + _batch(3))
    report = wait_for(lambda: _read_json(root / "failed/cut.hl7.error.json"))
    assert report["reason"] == "incomplete"
    assert list((root / "outbox").iterdir()) == []


def _engine(scorer: Any) -> BatchEngine:
    return BatchEngine(
        scorer, BatchSettings("demo", IntakePath.cli, frozenset({OutputKind.ndjson}), Limits())
    )


class _WriterStillAtWork(RecordScorer):
    """Scores like ``RecordScorer``; on the first record, acts on the input file the way a
    writer that was not done would."""

    def __init__(self, source: Path, act: Callable[[Path], None]) -> None:
        super().__init__()
        self._source, self._act = source, act

    def predict(self, request: Any) -> Any:
        if self.calls == 0:
            self._act(self._source)
        return super().predict(request)


def _append(path: Path) -> None:
    with path.open("a") as stream:
        stream.write(_batch(5, start=1001))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("act", "reason"), [(_append, "changed_while_read"), (_truncate, "short_read")]
)
def test_file_changing_while_read_is_an_error_not_a_success(
    tmp_path: Path, act: Callable[[Path], None], reason: str
) -> None:
    """300 bare messages (no end marker; ~30 kB past the read buffer): the writer appends
    or cuts the file while it is scored. The run fails; it never reports the part it read
    as the whole."""
    source = tmp_path / "in.hl7"
    source.write_text(_batch(300).replace("|/min", "|/min" + "x" * 400))
    assert source.stat().st_size > 96 * 1024
    engine = _engine(_WriterStillAtWork(source, act))
    job = engine.begin(tmp_path / "work", source, source.name, source.name, "j")
    with pytest.raises(UnreadableFile) as caught:
        engine.run(job)
    assert caught.value.reason == reason


def test_result_files_are_private_or_group_readable(tmp_path: Path) -> None:
    """Under a usual login umask (022, as outside systemd): results and reports 0600; with
    ``results_group_readable`` and setgid folders (the Ansible role's layout), 0640 in the
    folders' group, even under a 077 umask."""
    group = next(g for g in grp.getgrall() if g.gr_gid != os.getgid())
    for name, umask, overrides, mode, gid in [
        ("private", 0o022, {}, 0o600, os.getgid()),
        ("shared", 0o077, {"results_group_readable": True}, 0o640, group.gr_gid),
    ]:
        root = tmp_path / name
        for folder in ("outbox", "failed"):
            (root / folder).mkdir(parents=True)
            if gid != os.getgid():
                os.chown(root / folder, -1, gid)
                (root / folder).chmod(0o2770)
        old = os.umask(umask)
        try:
            _score_one_good_one_bad(root, overrides)
        finally:
            os.umask(old)
        written = [*(root / "outbox").iterdir(), root / "failed/bad.bin.error.json"]
        assert len(written) == 5
        for path in written:
            status = path.stat()
            assert (stat.S_IMODE(status.st_mode), status.st_gid) == (mode, gid), path.name
        assert stat.S_IMODE((root / "state/jobs").stat().st_mode) == 0o700


def _score_one_good_one_bad(root: Path, overrides: dict[str, Any]) -> None:
    drop = DropFolder(
        folder_config(root, settle_seconds=0.1, **overrides), RecordScorer(), Limits()
    )
    drop.start()
    try:
        (root / "inbox/ok.hl7").write_text(hl7_message(1))
        (root / "inbox/bad.bin").write_text("not a record\n")
        wait_for(lambda: _read_json(root / "outbox/ok.hl7.report.json"))
        wait_for(lambda: _read_json(root / "failed/bad.bin.error.json"))
    finally:
        drop.stop()
