"""Which version of a model was active, and which was its candidate, at any past moment:
read back from the audit log's lifecycle events (``activation``, ``staging``, ``promotion``,
``rollback``, ``abandonment``), so the logic in force when a patient was scored can be
named. Reads the current audit file and every rotated predecessor, oldest first; scoring
entries and lines it cannot read are passed over."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

EVENTS = ("activation", "staging", "promotion", "rollback", "abandonment")


@dataclass(frozen=True)
class LifecycleEvent:
    time: datetime
    event: str
    version: str | None
    note: str  # mode, forced and reason, previous version: what an operator reads

    def line(self) -> str:
        note = f"  ({self.note})" if self.note else ""
        return f"{self.time.isoformat(timespec='seconds')}  {self.event:<11} {self.version}{note}"


@dataclass(frozen=True)
class InForce:
    active: str | None  # None: no event says (the version predates the audit log)
    candidate: str | None


def read_history(audit_path: Path, model: str) -> list[LifecycleEvent]:
    """Every lifecycle event of ``model``, oldest first."""
    rotated: list[Path] = []  # .1 is the newest rotated file; they are numbered without gaps
    while (path := audit_path.with_name(f"{audit_path.name}.{len(rotated) + 1}")).exists():
        rotated.append(path)
    events = []
    for path in [*rotated[::-1], audit_path]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                entry = json.loads(line)
                if entry.get("model") != model or entry.get("event") not in EVENTS:
                    continue
                events.append(_event(entry))
            except (ValueError, AttributeError, TypeError):
                continue
    return sorted(events, key=lambda e: e.time)


def _event(entry: dict[str, object]) -> LifecycleEvent:
    event = str(entry["event"])
    notes = []
    if entry.get("mode"):
        notes.append(f"{entry['mode']}")
    if entry.get("previous_version"):
        notes.append(f"was {entry['previous_version']}")
    if entry.get("forced"):
        notes.append(f"forced: {entry.get('reason')}")
    version = entry.get("version")
    return LifecycleEvent(
        datetime.fromisoformat(str(entry["time"])),
        event,
        str(version) if version is not None else None,
        ", ".join(notes),
    )


def in_force(events: list[LifecycleEvent], at: datetime) -> InForce:
    """The active and candidate versions at ``at``, replaying the events up to it."""
    active: str | None = None
    candidate: str | None = None
    for e in events:
        if e.time > at:
            break
        if e.event in ("activation", "rollback"):
            active = e.version
        elif e.event == "staging":
            candidate = e.version
        elif e.event == "promotion":
            active, candidate = e.version, None
        elif e.event == "abandonment":
            candidate = None
    return InForce(active, candidate)
