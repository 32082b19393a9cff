"""The ``drop_folder:`` section of the agent config. A leaf: ``agent/config.py`` composes
it without importing the folder watcher (or watchdog)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, model_validator

from agent.batch.config import OutputKind
from agent.configbase import ConfigPath, Section


class DropFolderConfig(Section):
    """The ``drop_folder:`` section of the agent config."""

    model_config = ConfigDict(validate_default=True)  # resolve the default relative paths

    enabled: bool = False
    """Watch the inbox and score the files dropped into it."""

    inbox: ConfigPath = Path("drop/inbox")
    """Where files to score are dropped (only its top level is watched)."""

    outbox: ConfigPath = Path("drop/outbox")
    """Where result files and run reports are published."""

    processed: ConfigPath = Path("drop/processed")
    """Where originals go once their results are published."""

    failed: ConfigPath = Path("drop/failed")
    """Where originals go that cannot be read at all, each with ``<name>.error.json``."""

    state: ConfigPath = Path("drop/state")
    """Work folder: claimed files, their journals and uncommitted results. Keep it on the
    same filesystem as the inbox and outbox so every move is a rename."""

    model: str | None = None
    """The model every file is scored with (required when enabled)."""

    settle_seconds: float = Field(default=2.0, ge=0)
    """A file is taken once its size and mtime have not changed for this long (seconds),
    or at once when it was renamed within the inbox (from a hidden or ignored name)."""

    poll_interval: float = Field(default=5.0, gt=0)
    """Seconds between inbox scans when no file event arrives (network shares often send
    none)."""

    outputs: tuple[OutputKind, ...] = (OutputKind.ndjson, OutputKind.csv)
    """Result files to publish per input: ``ndjson``, ``csv``, ``fhir`` (RiskAssessment
    NDJSON). The run report is always written."""

    ignore_suffixes: tuple[str, ...] = (".tmp", ".part", ".partial", ".filepart", ".crdownload")
    """Names ending so are files still being copied by a transfer tool; never taken. Names
    starting with a dot are never taken either."""

    retry_seconds: float = Field(default=30.0, gt=0)
    """A file waits this long before another try when the model cannot score now (not
    installed yet, not configured) or an unexpected error (a full disk) stopped it."""

    checkpoint_records: int = Field(default=1000, ge=1)
    """Results are made durable at least every this many records. A checkpoint costs about
    four fsyncs (the part files, the journal and its folder), a few milliseconds each on a
    server disk: every 100 records that was a third of the time at 2,000 records/s."""

    checkpoint_seconds: float = Field(default=2.0, gt=0)
    """... and at least this often (seconds): the work a crash can cost."""

    incomplete_seconds: float = Field(default=300.0, gt=0)
    """A file whose format promises an end it does not show yet (an HL7 batch opened by
    ``FHS``/``BHS`` without its ``FTS``/``BTS``, a JSON document without its closing
    bracket) waits for it, at most this long (seconds) unchanged; then it is taken and
    fails as incomplete, with a report in ``failed/``."""

    owners: tuple[int, ...] = ()
    """User ids allowed to own inbox files (the senders); empty allows any owner. Whatever
    the owner, only a regular file with one link that not every user may write is read:
    anything else goes to ``failed/`` unread (docs/drop-folder.md)."""

    results_group_readable: bool = False
    """Result files and reports are 0640 instead of 0600: readable by their group, which
    they take from their folder. Make ``outbox`` and ``failed`` setgid to the group that
    collects results (the interface engine's), as the Ansible role does; a group named
    here instead would need a ``chown`` that the unit's ``PrivateUsers=yes`` forbids."""

    document_max: int = Field(default=64_000_000, gt=0)
    """Bytes: largest single-document JSON file (a Bundle), which is read whole. NDJSON,
    HL7 and CSV files stream and have no size limit."""

    @model_validator(mode="after")
    def _consistent(self) -> DropFolderConfig:
        if self.enabled and not self.model:
            raise ValueError("an enabled drop folder needs the model to score with")
        folders = [self.inbox, self.outbox, self.processed, self.failed, self.state]
        if len({f.resolve() for f in folders}) != len(folders):
            raise ValueError("inbox, outbox, processed, failed and state must be distinct folders")
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError("outputs lists a kind twice")
        return self
