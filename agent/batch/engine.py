"""The file-to-file batch engine shared by the drop folder and ``edge-agent score``.

A file is scored as a *job* in its own work folder: ``journal.json`` (see
``batch_journal``) and the part files the result lines go to. Records are scored in file
order through the data plane; every ``checkpoint_records`` records (or
``checkpoint_seconds``) the part files are fsync'd and then the journal is replaced to say
how many records and bytes are committed. After a crash, ``run`` cuts the part files back
to the journal's sizes and skips the committed records, so every record ends up with
exactly one result line. Only when all are scored does ``publish`` derive and atomically
publish the output files, an idempotent step that a crash may repeat.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from agent.batch.config import OutputKind
from agent.batch.formats import InputFormat, detect_format, read_items
from agent.batch.inputs import FileIdentity, InputPolicy, SettledInput, open_input
from agent.batch.items import (
    BatchItem,
    ReadContext,
    ReadStopped,
    UnreadableFile,
    VectorItem,
    never,
)
from agent.batch.journal import JOURNAL_NAME, JobState, Journal
from agent.batch.outputs import RunSummary, write_csv
from agent.batch.scoring import RESULTS_PART, RISK_PART, ResultLines
from agent.dataplane import DataPlane
from agent.durable import atomic_output, truncate_to, write_atomic
from agent.errors import AgentError
from agent.limits import Limits
from agent.types import IntakePath

log = logging.getLogger(__name__)


def output_name(stem: str, kind: OutputKind | None) -> str:
    """``None`` names the run report."""
    suffix = {
        OutputKind.ndjson: "results.ndjson",
        OutputKind.csv: "results.csv",
        OutputKind.fhir: "riskassessment.ndjson",
        None: "report.json",
    }[kind]
    return f"{stem}.{suffix}"


def numbered_stem(name: str, number: int) -> str:
    """The stem of the ``number``-th file called ``name``: ``labs.ndjson``,
    ``labs.2.ndjson``, ``labs.3.ndjson``... (the extension kept for format detection)."""
    if number <= 1:
        return name
    path = Path(name)
    return f"{path.stem}.{number}{path.suffix}"


@dataclass(frozen=True)
class BatchSettings:
    """How a front end (drop folder, CLI) wants its files scored."""

    model: str
    intake: IntakePath
    outputs: frozenset[OutputKind]
    limits: Limits
    caller: str = "batch"
    checkpoint_records: int = 1000  # commit at least every this many records
    checkpoint_seconds: float = 2.0  # ... and at least this often
    document_max: int = 64_000_000  # bytes: a single-document JSON file, read whole
    input_policy: InputPolicy = field(default_factory=InputPolicy)  # files it may read
    results_group_readable: bool = False  # result files 0640 (their group: the folder's)
    as_of: datetime | None = None  # look-back windows end here (historical files); None = now

    @property
    def output_mode(self) -> int:
        """Result files hold predictions about patients: readable by the agent's user
        only (0600), or also by their group (0640), whatever the umask."""
        return 0o640 if self.results_group_readable else 0o600


@dataclass(frozen=True)
class Progress:
    """Where scoring of one file stands, after each record (for a progress bar)."""

    name: str
    records: int
    bytes_read: int
    bytes_total: int


@dataclass
class BatchJob:
    """One file's scoring: its work folder and journal."""

    folder: Path
    journal: Journal

    @property
    def input(self) -> Path:
        return Path(self.journal.input)

    @property
    def outputs(self) -> frozenset[OutputKind]:
        """As chosen when the job began (a config change never splits a file's outputs)."""
        return frozenset(OutputKind(kind) for kind in self.journal.outputs)

    def part(self, name: str) -> Path:
        return self.folder / name


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class BatchEngine:
    """Scores files into result files; one job at a time per engine (not thread-safe)."""

    def __init__(self, plane: DataPlane, settings: BatchSettings) -> None:
        self.plane = plane
        self.settings = settings
        self._lines = ResultLines(plane, settings.intake, settings.caller, settings.as_of)

    # --- job lifecycle ----------------------------------------------------------------
    def begin(
        self,
        folder: Path,
        source: Path,
        name: str,
        stem: str,
        job_id: str,
        expected: FileIdentity | None = None,
    ) -> BatchJob:
        """Start a job for ``source`` (already in place: the engine never moves inputs).
        ``expected`` is the file a scan saw settle: ``run`` refuses any other, or this one
        changed."""
        folder.mkdir(parents=True, exist_ok=True)
        journal = Journal(
            job_id=job_id,
            input=str(source),
            name=name,
            stem=stem,
            model=self.settings.model,
            outputs=sorted(self.settings.outputs),
            started=utc_now(),
            identity=asdict(expected) if expected is not None else None,
        )
        journal.save(folder)
        return BatchJob(folder, journal)

    @staticmethod
    def resume(folder: Path) -> BatchJob:
        """The job in ``folder`` as its journal last committed it."""
        return BatchJob(folder, Journal.load(folder))

    def run(
        self,
        job: BatchJob,
        stop: Callable[[], bool] = never,
        progress: Callable[[Progress], None] | None = None,
    ) -> bool:
        """Score the job's remaining records. True when all are scored (the job is then
        ``publishing``); False when ``stop()`` turned true (state checkpointed, resumable).
        ``UnreadableFile`` means the whole file cannot be read: call ``fail``. A
        ``MODEL_UNAVAILABLE`` error from the data plane propagates with the job left at its last
        checkpoint: run it again once the model is served."""
        journal = job.journal
        if journal.state is not JobState.scoring:
            return journal.state is JobState.publishing
        expected = FileIdentity(**journal.identity) if journal.identity is not None else None
        with open_input(job.input, self.settings.input_policy, expected) as source:
            if journal.identity is None or journal.format is None:
                # saved by the first checkpoint: until then nothing is committed, and a
                # resume opens and detects the same way
                journal.identity = asdict(source.identity)
                journal.format = detect_format(source, journal.name, self.settings.limits).value
            return self._score(job, source, InputFormat(journal.format), stop, progress)

    def _score(
        self,
        job: BatchJob,
        source: SettledInput,
        fmt: InputFormat,
        stop: Callable[[], bool],
        progress: Callable[[Progress], None] | None,
    ) -> bool:
        """``run`` once the input is open and its format known."""
        journal = job.journal
        risk = OutputKind.fhir in job.outputs
        parts = [RESULTS_PART] + ([RISK_PART] if risk else [])
        for part in parts:
            if part in journal.sizes or job.part(part).exists():  # else: nothing to cut
                truncate_to(job.part(part), journal.sizes.get(part, 0))
        total = source.identity.size
        with _Parts(job, parts) as sinks:
            context = ReadContext(
                self.settings.limits, self.settings.document_max, job.folder, stop
            )
            items = read_items(source, fmt, context)
            uncommitted, committed_at = 0, time.monotonic()
            try:
                for unit in self._units(items, skip=journal.records_done):
                    # a checkpoint falls due after a record and is taken before the next
                    # one: the last record's is the publishing commit's below
                    if uncommitted and (
                        uncommitted >= self.settings.checkpoint_records
                        or time.monotonic() - committed_at >= self.settings.checkpoint_seconds
                    ):
                        sinks.commit(journal)
                        uncommitted, committed_at = 0, time.monotonic()
                    lines = self._lines.of(unit, journal.model, journal.job_id, risk)
                    for part, data in lines:
                        sinks.write(part, data)
                    journal.records_done = unit[-1][0]
                    uncommitted += len(unit)
                    if progress is not None:
                        done = journal.records_done
                        progress(Progress(journal.name, done, source.tell(), total))
                    if stop():
                        sinks.commit(journal)
                        return False
            except ReadStopped:
                return False
            source.verify_unchanged()
            journal.state = JobState.publishing
            journal.finished = utc_now()
            sinks.commit(journal)
        return True

    def fail(self, job: BatchJob, error: UnreadableFile | OSError) -> None:
        """Record that the file as a whole cannot be scored (resumable like publishing)."""
        job.journal.state = JobState.failed
        job.journal.failure_reason = error.reason if isinstance(error, AgentError) else "io_error"
        job.journal.failure_detail = str(error) if isinstance(error, AgentError) else "read error"
        job.journal.finished = utc_now()
        job.journal.save(job.folder)

    def publish(self, job: BatchJob, outdir: Path) -> RunSummary:
        """Write the output files of a fully scored job into ``outdir``, each atomically.
        Idempotent: after a crash it may run again and writes the same files."""
        journal = job.journal
        results = job.part(RESULTS_PART)
        summary = RunSummary.of(results)
        published: list[str] = []
        mode = self.settings.output_mode
        for kind in (OutputKind.ndjson, OutputKind.csv, OutputKind.fhir):
            if kind not in job.outputs:
                continue
            target = outdir / output_name(journal.stem, kind)
            with atomic_output(target, mode, exact=True) as stream:
                if kind is OutputKind.csv:
                    write_csv(results, stream, list(summary.output_names))
                else:
                    _copy(
                        job.part(RESULTS_PART if kind is OutputKind.ndjson else RISK_PART), stream
                    )
            published.append(target.name)
        about = {
            "file": journal.name,
            "format": journal.format,
            "model": journal.model,
            "started": journal.started,
            "finished": journal.finished,
        }
        report = summary.report(about, published)
        write_atomic(outdir / output_name(journal.stem, None), _json(report), mode, exact=True)
        return summary

    @staticmethod
    def discard(job: BatchJob) -> None:
        """Remove the job's work folder (journal last), once its outcome is published."""
        for entry in job.folder.iterdir():
            if entry.name != JOURNAL_NAME and entry.is_file():
                entry.unlink()
        shutil.rmtree(job.folder)

    # --- scoring ----------------------------------------------------------------------
    def _units(
        self, items: Iterable[BatchItem], skip: int
    ) -> Iterator[list[tuple[int, BatchItem]]]:
        """Records with their 1-based positions, past ``skip``: feature rows in batches
        (one call into the model), everything else one by one."""
        batch = max(1, min(self.settings.limits.batch_rows_max, self.settings.checkpoint_records))
        pending: list[tuple[int, BatchItem]] = []
        for position, item in enumerate(items, start=1):
            if position <= skip:
                continue
            if isinstance(item, VectorItem):
                pending.append((position, item))
                if len(pending) >= batch:
                    yield pending
                    pending = []
                continue
            if pending:
                yield pending
                pending = []
            yield [(position, item)]
        if pending:
            yield pending


class _Parts:
    """The job's open part files (appending) and the checkpoint that commits them."""

    def __init__(self, job: BatchJob, names: Sequence[str]) -> None:
        self._job = job
        self._names = list(names)
        self._files: dict[str, BinaryIO] = {}

    def __enter__(self) -> _Parts:
        for name in self._names:
            self._files[name] = open(self._job.part(name), "ab")
        return self

    def __exit__(self, *exc_info: object) -> None:
        for stream in self._files.values():
            stream.close()

    def write(self, name: str, data: bytes) -> None:
        self._files[name].write(data)

    def commit(self, journal: Journal) -> None:
        """Make the written lines durable, then say so in the journal (in that order)."""
        for name, stream in self._files.items():
            stream.flush()
            os.fsync(stream.fileno())
            journal.sizes[name] = stream.tell()
        journal.save(self._job.folder)


def _copy(source: Path, stream: BinaryIO) -> None:
    with open(source, "rb") as original:
        shutil.copyfileobj(original, stream, 1024 * 1024)


def _json(body: object) -> bytes:
    return json.dumps(body, indent=1, ensure_ascii=False).encode()
