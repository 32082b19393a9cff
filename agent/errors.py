"""Every error the agent raises on purpose, grouped by cause under one base class.

A leaf module: it imports nothing from the package. Messages must never carry patient
data (values, identifiers, names): they may name a resource type, a path, a segment and
field, a feature or a code system, never what a record contained. HTTP status codes and
HL7 acknowledgement codes are chosen at the edge that speaks HTTP or HL7, never here.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every deliberate agent error. ``reason`` is a short, stable, PHI-free slug
    used as a metric label value and in API error bodies."""

    reason = "agent_error"


# --- configuration -----------------------------------------------------------------------
class ConfigError(AgentError):
    """The agent configuration (or a file it names) is invalid."""

    reason = "config"


# --- records -----------------------------------------------------------------------------
class RecordError(AgentError):
    """An incoming record could not be parsed or validated."""

    reason = "bad_input"


class FhirError(RecordError):
    """A FHIR resource or Bundle is malformed or invalid."""


class Hl7Error(RecordError):
    """An HL7 v2 message is malformed or not supported."""


class UnsupportedMediaType(RecordError):
    """The record's media type is not one the agent reads."""

    reason = "unsupported_media_type"


class RequestTooLarge(RecordError):
    """A request body is larger than the limit for its intake path."""

    reason = "request_too_large"


class RequestTimeout(RecordError):
    """A request body did not arrive within the request time limit (a stalled or
    deliberately slow client)."""

    reason = "request_timeout"


class RequestHeadTooLarge(RecordError):
    """A request's head (target and headers) is larger than the limit: refused by the
    listener before the request reaches any route."""

    reason = "request_head_too_large"


class Unauthorized(AgentError):
    """A request without a valid credential (no bearer token, or one not accepted)."""

    reason = "unauthorized"


class Throttled(AgentError):
    """A client already has as many requests in flight as it may."""

    reason = "throttled"


# --- mapping -----------------------------------------------------------------------------
class MappingError(AgentError):
    """A site mapping is invalid for the model it binds (detected at load time)."""

    reason = "mapping"


class NoPatient(RecordError):
    """The input was read but holds no patient to score (a lone Condition, a
    CapabilityStatement, an empty Bundle, an HL7 message without PID)."""

    reason = "no_patient"


class UnmappableRecord(AgentError):
    """One patient's record cannot be turned into the model's input faithfully. The
    subclasses say why; ``feature`` names the (first) feature concerned."""

    reason = "unmappable"

    def __init__(self, message: str, feature: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature


class MissingValue(UnmappableRecord):
    """A feature configured to refuse has no usable value in the record."""

    reason = "missing"


class ImplausibleValue(UnmappableRecord):
    """A value lies outside the feature's plausible range and the mapping says refuse
    (a temperature in degF labelled Cel, a weight in grams labelled kg)."""

    reason = "out_of_range"


class UnconvertibleUnit(UnmappableRecord):
    """A value carries a unit that cannot be converted to the model's unit."""

    reason = "unit"


class UnseenCategory(UnmappableRecord):
    """A coded value is not among the levels the mapping lists, and the mapping refuses it."""

    reason = "unseen_category"


class TooMuchImputed(UnmappableRecord):
    """More features would be imputed than the model's imputation budget allows: the score
    would say more about the training medians than about the patient."""

    reason = "too_much_imputed"


class NoSubject(UnmappableRecord):
    """Resources that name no patient, in an input that holds several: they cannot be
    attributed, so they are refused rather than guessed."""

    reason = "no_subject"


class UnitError(MappingError):
    """A unit is unknown or cannot be converted to the model's unit."""

    reason = "unit"


# --- runtime -----------------------------------------------------------------------------
class RuntimeFault(AgentError):
    """A model module failed while scoring one call; the agent goes on."""

    reason = "model_error"


class ModelTrap(RuntimeFault):
    """The module trapped (unreachable, out-of-bounds access, memory cap hit...)."""

    reason = "model_trap"


class ModelDeadline(RuntimeFault):
    """The call ran out of fuel: it exceeded its deadline."""

    reason = "deadline"


def runtime_faults(base: type[RuntimeFault] = RuntimeFault) -> list[type[RuntimeFault]]:
    """Every kind of model failure: the refusals that are the model's fault, not the
    record's (answered 500/503 over HTTP; a canary candidate's are answered by the active
    version instead)."""
    return [base, *(k for sub in base.__subclasses__() for k in runtime_faults(sub))]


RUNTIME_FAULT_REASONS = frozenset(kind.reason for kind in runtime_faults())


class AbiViolation(AgentError):
    """A module does not follow the agent's ABI (imports something, lacks an export...)."""

    reason = "abi"


class ModuleMismatch(AbiViolation):
    """A signed module does not do what its manifest declares (another number of inputs
    or outputs, or no finite answer for the manifest's reference row): not activated."""

    reason = "module_mismatch"


class CompileError(AgentError):
    """A trained model cannot be compiled (unsupported operator, bad attribute...)."""

    reason = "compile"


# --- bundles and trust -------------------------------------------------------------------
class BundleError(AgentError):
    """A bundle is malformed or cannot be trusted."""

    reason = "bundle"


class SignatureError(BundleError):
    """Missing, malformed or wrong signature, or a signer that is not trusted."""

    reason = "signature"


class UntrustedKey(SignatureError):
    """The signing key is unknown to this agent or has been revoked."""

    reason = "untrusted_key"


class DigestMismatch(BundleError):
    """A file's SHA-256 or size differs from the signed manifest."""

    reason = "digest_mismatch"


class RollbackError(BundleError):
    """The bundle's version is not newer than the newest installed one."""

    reason = "rollback"


class ExpiredMetadata(BundleError):
    """Registry metadata is past its expiry time (freeze attack)."""

    reason = "expired"


class SizeLimitExceeded(BundleError):
    """A download or a file is larger than allowed."""

    reason = "too_large"


class RegistryError(AgentError):
    """A registry could not be reached or answered nonsense."""

    reason = "registry"


class StoreError(AgentError):
    """The on-disk bundle store is missing a version or is inconsistent."""

    reason = "store"


class UnknownModel(AgentError):
    """A request names a model that this agent does not serve."""

    reason = "unknown_model"


class RolloutError(AgentError):
    """A candidate operation that cannot be carried out: no candidate staged, or a
    promotion a gate blocks (the message names the failing gates)."""

    reason = "rollout"


class InternalError(AgentError):
    """An unexpected exception while handling a request: a bug, counted and logged with the
    request id, answered without its message (which could quote a record)."""

    reason = "internal"


class OutcomesError(AgentError):
    """A labelled-outcomes file for validation is malformed. Messages name a line and a
    column, never a value (the file holds patient identifiers)."""

    reason = "outcomes"


class NotEnabled(AgentError):
    """A request for a feature this site has not switched on (live performance)."""

    reason = "not_enabled"


class NoOutcome(AgentError):
    """A message of a configured outcome type states no outcome: its field holds none of
    the configured values, or no time can be read. The message names the field, never
    its value."""

    reason = "no_outcome"
