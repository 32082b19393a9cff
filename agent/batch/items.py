"""What a batch input file is cut into: one item per record, in file order.

Readers (``batch_fhir``, ``batch_hl7``, ``batch_csv``) yield these; the engine scores them.
An item that could not be read is a ``BadItem``: it takes its place in the output like any
other record, so a bad line fails only itself. ``lines`` are 1-based physical line numbers
(for HL7: segment lines) and are what the run report names; ``label`` is for the caller's
output files only and may identify a patient, so it is never logged or reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import RecordError
from agent.limits import Limits
from agent.types import RecordFormat

Lines = tuple[int, int] | None  # first and last line of the record; None for a Bundle file


@dataclass(frozen=True)
class RecordItem:
    """A patient record for ``DataPlane.score``."""

    lines: Lines
    body: bytes
    format: RecordFormat
    label: str = ""


@dataclass(frozen=True)
class VectorItem:
    """A row of already-extracted features, as the cells of the named columns; read into
    the model's input order against the model view that scores it (``csv_rows.vector_row``),
    then scored with ``DataPlane.score_vectors``."""

    lines: Lines
    columns: tuple[str, ...]  # the header's feature columns (shared by every row of a file)
    cells: tuple[str, ...]
    label: str = ""


@dataclass(frozen=True)
class BadItem:
    """A record that could not be read; ``reason`` is a PHI-free slug, ``detail`` a
    PHI-free sentence (it names a column or a JSON position, never a value)."""

    lines: Lines
    reason: str
    detail: str
    label: str = ""


BatchItem = RecordItem | VectorItem | BadItem


class UnreadableFile(RecordError):
    """The whole file cannot be read as any batch format: it goes to ``failed/``.

    ``reason`` is a per-instance slug (``unknown_format``, ``bad_json``, ``too_large``...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def never() -> bool:
    """The default ``stop``: never."""
    return False


@dataclass(frozen=True)
class ReadContext:
    """What a reader may use besides the stream."""

    limits: Limits
    document_max: int  # bytes: a single-document JSON file, which is read whole
    scratch: Path  # the job's work folder (the NDJSON index lives there)
    stop: Callable[[], bool] = never  # polled during long preparatory reads


class ReadStopped(Exception):
    """``stop()`` turned true during a preparatory read (the NDJSON index); nothing was
    scored in this run and the job simply resumes later."""
