"""Group FHIR resources into one ``PatientRecord`` per patient.

Observations and Encounters join the Patient their ``subject`` references (``Patient/id``,
a Bundle ``fullUrl`` such as ``urn:uuid:...``, or an absolute URL ending in ``Patient/id``).
A subject that resolves to no Patient in the input still forms its own record (patient None),
so a Bundle of Observations without its Patient yields one record. A resource without a
subject joins the only patient there is; with several patients it is refused rather than
guessed. Other resource types are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.errors import FhirError
from agent.types import PatientRecord


@dataclass(frozen=True)
class Located:
    """A resource and where it was found (``line 3: Bundle.entry[2].resource``)."""

    resource: dict[str, Any]
    where: str
    full_url: str | None = None


@dataclass
class _Group:
    key: str
    patient: dict[str, Any] | None = None
    observations: list[dict[str, Any]] = field(default_factory=list)
    encounters: list[dict[str, Any]] = field(default_factory=list)


def _relative(reference: str) -> str:
    """``https://x/fhir/Patient/7/_history/2`` -> ``Patient/7``; other strings unchanged."""
    head = reference.split("/_history/", 1)[0]
    cut = head.rfind("Patient/")
    return head[cut:] if cut > 0 and head[cut - 1] == "/" else head


def group_by_patient(found: list[Located]) -> list[PatientRecord]:
    """One record per patient, in order of first appearance (see the module docstring)."""
    groups: dict[str, _Group] = {}
    alias: dict[str, str] = {}
    for item in found:
        if item.resource.get("resourceType") == "Patient":
            key = f"Patient/{item.resource.get('id')}" if item.resource.get("id") else item.where
            group = groups.setdefault(key, _Group(key))
            if group.patient is not None:
                raise FhirError(f"Patient at {item.where}: the same Patient appears twice")
            group.patient = item.resource
            alias[key] = key
            if item.full_url:
                alias[item.full_url] = key
                alias[_relative(item.full_url)] = key

    orphans: list[Located] = []
    for item in found:
        kind = item.resource.get("resourceType")
        if kind not in ("Observation", "Encounter"):
            continue
        reference = (item.resource.get("subject") or {}).get("reference")
        if not reference:
            orphans.append(item)
            continue
        key = alias.get(reference) or alias.get(_relative(reference)) or _relative(reference)
        group = groups.setdefault(key, _Group(key))
        (group.observations if kind == "Observation" else group.encounters).append(item.resource)

    if orphans:
        if len(groups) > 1:
            raise FhirError(f"{orphans[0].resource.get('resourceType')} at {orphans[0].where}: "
                            "no subject, and the input holds several patients")
        group = next(iter(groups.values())) if groups else groups.setdefault("", _Group(""))
        for item in orphans:
            kind = item.resource.get("resourceType")
            (group.observations if kind == "Observation" else group.encounters).append(
                item.resource)

    return [
        PatientRecord(patient=g.patient, observations=tuple(g.observations),
                      encounters=tuple(g.encounters), label=g.key, source="fhir")
        for g in groups.values()
    ]
