"""Group FHIR resources into one ``PatientRecord`` per patient: the one grouping rule, used
by the records reader (HTTP, MLLP, CLI) and by the batch engine's streaming index alike.

Observations and Encounters join the Patient their ``subject`` references (``Patient/id``,
a Bundle ``fullUrl`` such as ``urn:uuid:...``, or an absolute URL ending in ``Patient/id``).
A subject that resolves to no Patient in the input still forms its own record (patient None),
so a Bundle of Observations without its Patient yields one record. A resource without a
subject joins the only patient there is; with several patients it cannot be attributed and
forms a record of its own that is refused (``no_subject``) rather than guessed. Other
resource types, and Bundle entries that only ask (GET) or delete (DELETE), carry nothing
about the patient and are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.errors import FhirError
from agent.types import PatientRecord

GROUPED_TYPES = frozenset({"Observation", "Encounter"})  # joined to a patient by subject
NO_SUBJECT = "!no_subject"  # key of a grouped resource that names no patient
_NO_DATA_METHODS = frozenset({"GET", "HEAD", "DELETE"})  # transaction entries without data


Located = tuple[dict[str, Any], str, str | None]
"""A resource, where it was found (``line 3: Bundle.entry[2].resource``) and its Bundle
entry's ``fullUrl`` (None outside a Bundle): a plain tuple, made for every resource of every
request."""


def entry_resource(entry: Any) -> Any:
    """What a Bundle entry contributes (its ``resource``, as found: the caller checks its
    shape), or None: no resource, or a transaction or batch request that reads or deletes
    rather than states something."""
    if not isinstance(entry, dict):
        return None
    request = entry.get("request")
    if isinstance(request, dict) and str(request.get("method", "")).upper() in _NO_DATA_METHODS:
        return None
    return entry.get("resource")


def reference_key(reference: str) -> str:
    """``https://x/fhir/Patient/7/_history/2`` -> ``Patient/7``; other strings unchanged."""
    cut = reference.find("/_history/")
    head = reference if cut < 0 else reference[:cut]  # no copy in the usual case
    cut = head.rfind("Patient/")
    return head[cut:] if cut > 0 and head[cut - 1] == "/" else head


def resource_key(
    resource: Mapping[str, Any], aliases: Mapping[str, str], full_url: str | None = None
) -> str | None:
    """The patient ``resource`` belongs to; ``NO_SUBJECT`` for an Observation or Encounter
    that names none; None for types that are no part of a patient record."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        rid = resource.get("id")
        return f"Patient/{rid}" if isinstance(rid, str) and rid else full_url or NO_SUBJECT
    if kind not in GROUPED_TYPES:
        return None
    return subject_key(resource, aliases)


def subject_key(resource: Mapping[str, Any], aliases: Mapping[str, str]) -> str:
    """``resource_key`` of an Observation or Encounter: the patient its ``subject`` names
    (through ``aliases``, a Bundle's fullUrls), ``NO_SUBJECT`` if none."""
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str) or not reference:
        return NO_SUBJECT
    alias = aliases.get(reference)
    if alias is not None:
        return alias
    key = reference_key(reference)
    return aliases.get(key, key)


@dataclass
class _Group:
    key: str
    patient: dict[str, Any] | None = None
    observations: list[dict[str, Any]] = field(default_factory=list)
    encounters: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> PatientRecord:
        orphans = self.key == NO_SUBJECT
        return PatientRecord(
            patient=self.patient,
            observations=tuple(self.observations),
            encounters=tuple(self.encounters),
            label="" if orphans else self.key,
            source="fhir",
            subject=None if orphans or not self.key else {"reference": self.key},
            problem=(
                "resources without a subject, in an input that holds several patients"
                if orphans
                else None
            ),
        )


def group_by_patient(found: list[Located]) -> list[PatientRecord]:
    """One record per patient, in order of first appearance (see the module docstring)."""
    groups: dict[str, _Group] = {}
    aliases: dict[str, str] = {}
    for resource, where, full_url in found:
        if resource.get("resourceType") != "Patient":
            continue
        key = resource_key(resource, {}, full_url)
        if key is None or key == NO_SUBJECT:
            key = where
        group = groups.setdefault(key, _Group(key))
        if group.patient is not None:
            raise FhirError(f"Patient at {where}: the same Patient appears twice")
        group.patient = resource
        if full_url:
            aliases[full_url] = key
            aliases[reference_key(full_url)] = key
    for resource, _, _ in found:
        kind = resource.get("resourceType")
        if kind not in GROUPED_TYPES:
            continue
        key = subject_key(resource, aliases)
        joins = groups.get(key)
        if joins is None:  # not ``setdefault``: a _Group made for every resource costs
            joins = groups[key] = _Group(key)
        (joins.observations if kind == "Observation" else joins.encounters).append(resource)
    orphans = groups.pop(NO_SUBJECT, None)
    if orphans is not None:
        if len(groups) > 1:
            groups[NO_SUBJECT] = orphans  # refused as a whole: cannot be attributed
        else:
            only = next(iter(groups.values())) if groups else groups.setdefault("", _Group(""))
            only.observations += orphans.observations
            only.encounters += orphans.encounters
    return [g.record() for g in groups.values()]
