"""The per-file work journal: how far a file's scoring got, durably.

One small JSON file per file being scored, replaced atomically at each checkpoint. What it
says is the truth after a crash: ``records_done`` records have their result lines in the
part files, and each part file's first ``sizes[part]`` bytes are exactly those lines. Bytes
past that size were written after the last checkpoint and are cut off on resume.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from agent.durable import write_atomic

JOURNAL_NAME = "journal.json"


class JobState(StrEnum):
    scoring = "scoring"  # records are being scored into the part files
    publishing = "publishing"  # all records scored; outputs being published (idempotent)
    failed = "failed"  # the file as a whole cannot be read; it goes to failed/


@dataclass
class Journal:
    job_id: str
    input: str  # the file being scored
    name: str  # its name as it arrived
    stem: str  # what its output files are named after (``name``, made unique)
    model: str
    started: str  # ISO 8601, UTC
    outputs: list[str] = field(default_factory=list)  # output kinds chosen at the start
    state: JobState = JobState.scoring
    format: str | None = None  # set once detected
    records_done: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # part file name -> committed bytes
    finished: str | None = None
    failure_reason: str | None = None
    failure_detail: str | None = None

    def save(self, folder: Path) -> None:
        write_atomic(folder / JOURNAL_NAME, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, folder: Path) -> Journal:
        """Raises ``FileNotFoundError`` when the job never got a journal, ``ValueError``
        when the journal is not one (it is written atomically, so only a disk fault)."""
        data = json.loads((folder / JOURNAL_NAME).read_bytes())
        if not isinstance(data, dict):
            raise ValueError("journal is not a JSON object")
        try:
            journal = cls(**data)
        except TypeError as exc:
            raise ValueError("journal has unexpected keys") from exc
        journal.state = JobState(journal.state)
        return journal
