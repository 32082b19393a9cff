"""The drop folder: files in, results out, originals moved to ``processed/`` or ``failed/``.

A file is picked up from the inbox once it is complete: renamed into the inbox (seen by
the watchdog observer), or unchanged in size and mtime for ``settle_seconds``; and, when its
format has an end marker, showing it (``agent.batch.formats.end_seen``). It is then
*claimed* by a rename into its own job folder under ``state/jobs/`` (private to the agent),
opened there once with the checks of ``agent.batch.inputs`` (the very file the scan saw,
regular, allowed; anything else goes to ``failed/`` unread, with a report), scored by the
batch engine (``agent.batch.engine``) with checkpoints, its outputs published atomically
to the outbox, and the original moved to ``processed/``. A job folder left by a crash or a
stop is resumed on the next start, before any new file. One worker thread does all of it,
so files are scored one at a time in arrival order.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from agent.batch.engine import (
    BatchEngine,
    BatchJob,
    BatchSettings,
    numbered_stem,
    output_name,
)
from agent.batch.formats import detect_format, end_seen
from agent.batch.inputs import FileIdentity, InputPolicy, open_input
from agent.batch.items import UnreadableFile
from agent.batch.journal import JobState, Journal
from agent.batch.scoring import MODEL_UNAVAILABLE
from agent.dataplane import DataPlane
from agent.durable import move_durably, write_atomic
from agent.errors import ConfigError
from agent.intake.dropfolder.config import DropFolderConfig
from agent.intake.dropfolder.outcomes import OutcomeFiles, OutcomeFolders, OutcomeJournal
from agent.limits import Limits
from agent.types import IntakePath

log = logging.getLogger(__name__)


@dataclass
class _Arrival:
    """An inbox entry as the scans see it: unchanged ``since`` (monotonic seconds); whether
    it shows its format's end (None: not looked at in this state yet)."""

    identity: FileIdentity
    regular: bool
    since: float
    ended: bool | None = None


class _InboxEvents(FileSystemEventHandler):
    """Wakes the worker on any inbox event; remembers files renamed into the inbox, which
    are complete by construction and need no settle time."""

    def __init__(self, drop: DropFolder) -> None:
        self._drop = drop

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "moved":
            destination = Path(os.fsdecode(event.dest_path))
            if destination.parent == self._drop.config.inbox:
                self._drop.renamed_in(destination.name)
        self._drop.wake()


class DropFolder:
    """Watches ``config.inbox`` and scores what arrives through ``plane``.

    ``start()`` returns at once; ``stop()`` finishes the record in hand, checkpoints the
    file and returns within ``limits.drain_timeout`` seconds (plus one record's scoring)."""

    def __init__(self, config: DropFolderConfig, plane: DataPlane, limits: Limits) -> None:
        self.config = config
        self.limits = limits
        self.policy = InputPolicy(
            single_link=True, refuse_world_writable=True, owners=frozenset(config.owners)
        )
        self.engine = BatchEngine(
            plane,
            BatchSettings(
                model=config.model or "",
                intake=IntakePath.drop_folder,
                outputs=frozenset(config.outputs),
                limits=limits,
                caller="drop_folder",
                checkpoint_records=config.checkpoint_records,
                checkpoint_seconds=config.checkpoint_seconds,
                document_max=config.document_max,
                input_policy=self.policy,
                results_group_readable=config.results_group_readable,
            ),
        )
        self.outcome_files = OutcomeFiles(
            plane,
            config.model or "",
            self.policy,
            OutcomeFolders(
                config.outbox, config.processed, config.failed, self.engine.settings.output_mode
            ),
            config.document_max,
        )
        self._jobs_root = config.state / "jobs"
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._renamed: set[str] = set()
        self._seen: dict[str, _Arrival] = {}
        self._retry_at: dict[str, float] = {}  # job id -> monotonic time
        self._waits_due = 0.0  # monotonic time the jobs waiting for a model are tried again
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if not self.config.model:
            raise ConfigError("drop_folder.model: the drop folder needs a model to score with")
        for folder in (
            self.config.inbox,
            self.config.outbox,
            self.config.processed,
            self.config.failed,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        self._jobs_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._jobs_root.chmod(0o700)  # claimed files, their results and indexes: the agent's
        if self.config.inbox.stat().st_dev != self._jobs_root.stat().st_dev:
            raise ConfigError(
                "drop_folder.state must be on the inbox's filesystem: a claim is a rename"
            )
        self._stopping.clear()
        observer = Observer()
        observer.schedule(_InboxEvents(self), str(self.config.inbox), recursive=False)
        observer.start()
        self._observer = observer
        self._worker = threading.Thread(target=self._run, name="drop-folder", daemon=True)
        self._worker.start()
        log.info("drop folder watching", extra={"path": str(self.config.inbox)})

    def stop(self) -> None:
        """The worker first (it may still move files), then the observer."""
        self._stopping.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(self.limits.drain_timeout)
            if self._worker.is_alive():
                log.warning("drop folder still scoring a record at stop")
            self._worker = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(self.limits.drain_timeout)
            self._observer = None

    def wake(self) -> None:
        self._wake.set()

    def renamed_in(self, name: str) -> None:
        with self._lock:
            self._renamed.add(name)

    # --- the worker ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._one_pass()
            except Exception as exc:  # an unmounted share must not end the worker
                log.error(
                    "drop folder cannot read its folders", extra={"error_type": type(exc).__name__}
                )
            self._wake.wait(self._next_wait())
            self._wake.clear()

    def _one_pass(self) -> None:
        """Jobs left from before first, then the files that have settled in the inbox."""
        for folder in self._pending_jobs():
            if self._stopping.is_set():
                return
            self._guarded(folder.name, functools.partial(self._resume, folder))
        for name in self._settled_files():
            if self._stopping.is_set():
                return
            self._guarded(name, functools.partial(self._claim, name))

    def _guarded(self, key: str, action: Callable[[], None]) -> None:
        """Run one file's step; an unexpected error leaves its job for a later retry
        instead of stopping the worker."""
        try:
            action()
        except Exception as exc:
            log.error("drop folder step failed", extra={"error_type": type(exc).__name__})
            self._retry_at[key] = time.monotonic() + self.config.retry_seconds

    def _pending_jobs(self) -> list[Path]:
        now = time.monotonic()
        folders = sorted(p for p in self._jobs_root.iterdir() if p.is_dir())
        return [f for f in folders if self._retry_at.get(f.name, 0.0) <= now]

    def _settled_files(self) -> list[str]:
        """Inbox entries ready to take, oldest first; also notes when to look again. Every
        entry but a folder is a candidate: one that is not a regular file settles like any
        other and is then refused with a report, never followed or skipped in silence."""
        now = time.monotonic()
        ready: list[tuple[int, str]] = []
        present: set[str] = set()
        with os.scandir(self.config.inbox) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name.endswith(self.config.ignore_suffixes):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    status = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                present.add(name)
                identity = FileIdentity.of(status)
                seen = self._seen.get(name)
                if seen is None or seen.identity != identity:
                    seen = self._seen[name] = _Arrival(identity, stat.S_ISREG(status.st_mode), now)
                with self._lock:
                    renamed = name in self._renamed
                unchanged = now - seen.since
                if not (renamed or unchanged >= self.config.settle_seconds):
                    continue
                if seen.ended is None:
                    seen.ended = not seen.regular or self._shows_end(name, seen.identity)
                if (
                    seen.ended or unchanged >= self.config.incomplete_seconds
                ) and self._retry_at.get(name, 0.0) <= now:
                    ready.append((status.st_mtime_ns, name))
        self._seen = {k: v for k, v in self._seen.items() if k in present}
        with self._lock:
            self._renamed &= present
        return [name for _, name in sorted(ready)]

    def _shows_end(self, name: str, identity: FileIdentity) -> bool:
        """Whether the settled file ``name`` shows its format's end. A file that cannot or
        must not be opened counts as ended: it is taken, and refused with its reason."""
        try:
            with open_input(self.config.inbox / name, self.policy, identity) as stream:
                fmt = detect_format(stream, name, self.limits)
                return end_seen(stream, fmt, self.limits)
        except FileNotFoundError:
            return False  # gone meanwhile; the next scan forgets it
        except (UnreadableFile, OSError):
            return True

    def _next_wait(self) -> float:
        """Sleep until the next unsettled file may have settled (or waited long enough for
        its end), at most one poll interval."""
        now = time.monotonic()
        settle, incomplete = self.config.settle_seconds, self.config.incomplete_seconds
        waits = [
            seen.since + (incomplete if seen.ended is False else settle) - now + 0.01
            for seen in self._seen.values()
        ]
        pending = [w for w in waits if w > 0]
        return min([self.config.poll_interval, *pending])

    # --- one file -----------------------------------------------------------------------
    def _claim(self, name: str) -> None:
        """Move ``name`` out of the inbox into a new job folder (the claim is that rename),
        then score it."""
        job_id = f"{time.time_ns():020d}"
        folder = self._jobs_root / job_id
        (folder / "in").mkdir(parents=True)
        try:
            move_durably(self.config.inbox / name, folder / "in" / name)
        except FileNotFoundError:  # taken away by someone else meanwhile
            shutil.rmtree(folder)
            return
        with self._lock:
            self._renamed.discard(name)
        seen = self._seen.pop(name, None)
        expected = seen.identity if seen is not None else None
        start = functools.partial(self._start_job, folder, name, expected)
        self._guarded(folder.name, start)  # claimed: a retry is the job's, not the name's

    def _start_job(self, folder: Path, name: str, expected: FileIdentity | None = None) -> None:
        """Begin scoring the claimed ``name``; ``expected`` is the file the scan saw settle
        (the claim was a rename, so the same inode), which the engine checks at open."""
        path, stem = folder / "in" / name, self._free_stem(name)
        if self.outcome_files.take(folder, name, stem, expected):
            self._file_outcomes(folder)
            return
        job = self.engine.begin(folder, path, name, stem, folder.name, expected)
        self._advance(job)

    def _file_outcomes(self, folder: Path) -> None:
        """Record an outcomes CSV and file it (outcomes.py), or let it wait for its model."""
        waiting = self.outcome_files.file(folder)
        if waiting is not None:
            self._wait(folder, waiting.model, waiting.reason)
            return
        shutil.rmtree(folder)

    def _wait(self, folder: Path, model: str, reason: str) -> None:
        """The model cannot serve the job in ``folder`` now (not installed yet, not
        configured): it stays claimed and is tried again within ``retry_seconds``. Jobs
        waiting at once are due at once and so retried in one pass, in claim order: once
        the model is there, a scored file's predictions are stored before an outcome file
        dropped after it is recorded."""
        log.warning(
            "drop folder waits: the model cannot score now",
            extra={"job": folder.name, "model": model, "reason": reason},
        )
        now = time.monotonic()
        if self._waits_due <= now:
            self._waits_due = now + self.config.retry_seconds
        self._retry_at[folder.name] = self._waits_due

    def _resume(self, folder: Path) -> None:
        """Carry on with a job a crash or a stop left behind."""
        if OutcomeJournal.load(folder) is not None:
            self._file_outcomes(folder)
            return
        try:
            job = self.engine.resume(folder)
        except (FileNotFoundError, ValueError):  # claimed, no (usable) journal: start over
            inputs = list((folder / "in").iterdir()) if (folder / "in").is_dir() else []
            if not inputs:
                shutil.rmtree(folder)
                return
            self._start_job(folder, inputs[0].name)
            return
        log.info(
            "drop folder resuming",
            extra={"job": job.journal.job_id, "count": job.journal.records_done},
        )
        self._advance(job)

    def _advance(self, job: BatchJob) -> None:
        """Take a job from wherever its journal says to its end (or to a stop)."""
        if job.journal.state is JobState.scoring:
            try:
                finished = self.engine.run(job, stop=self._stopping.is_set)
            except (UnreadableFile, OSError) as exc:
                self.engine.fail(job, exc)
            except MODEL_UNAVAILABLE as exc:
                self._wait(job.folder, job.journal.model, exc.reason)
                return
            else:
                if not finished:
                    log.info("drop folder stopped mid-file", extra={"job": job.journal.job_id})
                    return
        if job.journal.state is JobState.publishing:
            self._publish(job)
        elif job.journal.state is JobState.failed:
            self._reject(job)
        self.engine.discard(job)

    def _publish(self, job: BatchJob) -> None:
        stem = job.journal.stem
        if not job.input.exists():  # a crash after the original was moved: all done
            return
        summary = self.engine.publish(job, self.config.outbox)
        move_durably(job.input, self.config.processed / stem)
        log.info(
            "drop folder file scored",
            extra={
                "job": job.journal.job_id,
                "count": summary.records,
                "status": "ok" if not summary.failed else "partial",
            },
        )

    def _reject(self, job: BatchJob) -> None:
        """Move an unreadable file to failed/, then write its report beside it: the report
        appears last, so whoever sees it finds the file complete. A crash between the two
        is finished on restart (the file is in failed/, its report not yet)."""
        journal = job.journal
        target = self.config.failed / journal.stem
        report_path = target.with_name(f"{journal.stem}.error.json")
        if os.path.lexists(job.input):  # a symlink refused unread is moved as it is
            move_durably(job.input, target)
        elif report_path.exists() or not os.path.lexists(target):
            return
        report = {
            "file": journal.name,
            "reason": journal.failure_reason,
            "detail": journal.failure_detail,
            "format": journal.format,
            "model": journal.model,
            "started": journal.started,
            "failed": journal.finished,
        }
        mode = self.engine.settings.output_mode
        write_atomic(report_path, json.dumps(report, indent=1).encode(), mode, exact=True)
        log.warning(
            "drop folder file unreadable",
            extra={"job": journal.job_id, "reason": journal.failure_reason, "status": "failed"},
        )

    def _free_stem(self, name: str) -> str:
        """``name``, or ``stem.N.suffix`` when an earlier file of that name left outputs,
        so nothing already published is overwritten."""
        taken = self._stems_in_hand()
        number, candidate = 1, name
        while (
            candidate in taken
            or os.path.lexists(self.config.processed / candidate)
            or os.path.lexists(self.config.failed / candidate)
            or (self.config.outbox / output_name(candidate, None)).exists()
        ):
            number += 1
            candidate = numbered_stem(name, number)
        return candidate

    def _stems_in_hand(self) -> set[str]:
        """The stems of the files claimed and not yet filed (scored or outcome files)."""
        stems = set()
        for folder in self._jobs_root.iterdir():
            outcomes = OutcomeJournal.load(folder)
            if outcomes is not None:
                stems.add(outcomes.stem)
                continue
            with contextlib.suppress(FileNotFoundError, ValueError):
                stems.add(Journal.load(folder).stem)
        return stems
