"""The agent's one YAML configuration, typed once at load.

Each part declares its own section next to its code; this module only composes them and
turns a validation failure into a ``ConfigError`` that names the file, the key, the line
and what is wrong. Nothing here starts anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from agent.audit import KEEP_ROTATED, Retention
from agent.bundle.trust import TrustConfig
from agent.configbase import ConfigPath, Section
from agent.errors import ConfigError
from agent.intake.dropfolder.config import DropFolderConfig
from agent.intake.http.config import HttpConfig
from agent.intake.mllp.config import MllpConfig
from agent.limits import Limits
from agent.monitor.config import MonitorConfig
from agent.performance.config import PerformanceConfig
from agent.records.config import RecordsConfig
from agent.registry.config import RegistryConfig
from agent.rollout.config import PromotionGates, RolloutMode
from agent.store.config import StoreConfig
from agent.yamlfile import KeyPath, line_of, read_with_lines


class CardThresholds(Section):
    """Where a model's risk output turns a CDS Hooks card from info to warning to critical."""

    warning: float = 0.3
    """Risk at or above which the card's indicator is ``warning``."""

    critical: float = 0.6
    """Risk at or above which the card's indicator is ``critical``."""


class ModelConfig(Section):
    name: str
    """The model's name, as in its bundle manifest."""

    mapping: ConfigPath
    """This site's mapping of its records to the model's features (YAML)."""

    registry: str | None = None
    """Name of the registry (under ``registries``) that publishes this model."""

    risk_output: str | None = None
    """The output that CDS Hooks cards and FHIR RiskAssessment report (default: the first
    probability output of the last class)."""

    cards: CardThresholds = Field(default_factory=CardThresholds)
    """CDS Hooks card indicator thresholds on ``risk_output``."""

    rollout: RolloutMode = "direct"
    """What a newly pulled version does: serve at once (``direct``), or become the
    candidate scored in ``shadow`` beside the active version, or answer a ``canary`` share
    of patients (see docs/operations.md)."""

    canary_share: float = Field(default=0.05, gt=0, lt=1)
    """Share of patients a ``canary`` candidate answers, chosen by a keyed hash of the
    patient reference (the key derives from ``audit.hmac_key_file``)."""

    gates: PromotionGates = Field(default_factory=PromotionGates)
    """What a candidate must show before ``models promote`` makes it active."""


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level written. Log lines never carry patient data at any level."""

    format: Literal["json", "text"] = "json"
    """Structured JSON lines (for journald and log shippers) or plain text."""


class AuditConfig(Section):
    path: ConfigPath | None = None
    """Append-only JSON-lines audit log of every scoring; None disables it."""

    hmac_key_file: ConfigPath | None = None
    """Site secret used to HMAC each input, so a record can be matched later without
    storing it. Required when ``path`` is set."""

    max_bytes: int = Field(default=50_000_000, ge=1_000)
    """Rotate the audit file past this size (bytes)."""

    min_age_seconds: float = Field(default=86_400.0, ge=0)
    """A rotated file whose last entry is younger than this is never deleted: a flood of
    requests cannot rotate the last day's history away. Extra files are kept instead."""

    max_files: int = Field(default=20, ge=KEEP_ROTATED + 1)
    """Audit files at most (the current one included; disk use up to ``max_files *
    max_bytes``). When all are younger than ``min_age_seconds``, new entries are dropped
    and counted (``edge_agent_audit_entries_dropped_total``) rather than history deleted."""

    write_before_answer: bool = False
    """Write each scoring's entry on the request's own thread, so no answer leaves before
    its entry is handed to the OS (about 45 us more per request on a 40 kB body). By
    default a writer thread writes the entries in groups just after their answers: a
    ``kill -9`` or a crash can lose the last moment's entries; a clean stop loses none
    (docs/reliability.md, "The audit log's write contract")."""

    def retention(self) -> Retention:
        return Retention(self.max_bytes, self.min_age_seconds, self.max_files)

    @model_validator(mode="after")
    def _key_with_path(self) -> AuditConfig:
        if self.path is not None and self.hmac_key_file is None:
            raise ValueError("an audit log needs hmac_key_file (the site secret)")
        return self


class LimitsConfig(Section):
    """Overrides of ``agent.limits.Limits``; every field is optional."""

    http_body_max: int | None = Field(default=None, gt=0)
    """Bytes in one HTTP request body."""

    hl7_message_max: int | None = Field(default=None, gt=0)
    """Bytes in one MLLP frame."""

    bundle_download_max: int | None = Field(default=None, gt=0)
    """Bytes in one file pulled from a registry."""

    model_memory_max: int | None = Field(default=None, gt=0)
    """Bytes of linear memory a model may use."""

    model_fuel_per_row: int | None = Field(default=None, gt=0)
    """Wasm fuel per scored row: the per-call deadline."""

    request_timeout: float | None = Field(default=None, gt=0)
    """Seconds for one HTTP request."""

    drain_timeout: float | None = Field(default=None, gt=0)
    """Seconds to finish in-flight work on SIGTERM."""

    http_connections_max: int | None = Field(default=None, gt=0)
    """HTTP connections open at once, TLS handshakes included."""

    http_tls_handshakes_max: int | None = Field(default=None, gt=0)
    """HTTPS connections in their TLS handshake at once (the oldest is closed past it)."""

    http_idle_timeout: float | None = Field(default=None, gt=0)
    """Seconds an HTTP connection may go without starting a request (TLS handshake
    included)."""

    inline_score_max: int | None = Field(default=None, ge=0)
    """Bytes: an HTTP predict body up to this is scored on the event loop, a larger one in a
    worker thread (docs/adr/0009); 0 scores every request in a thread."""

    audit_refusal_window: float | None = Field(default=None, gt=0)
    """Seconds: identical edge refusals (HTTP, MLLP) from one client within it, after the
    first, are audited as one entry with their count (docs/operations.md)."""

    comparison_checkpoint: float | None = Field(default=None, ge=0)
    """Seconds between keeping each candidate's comparison in the store (it is kept at every
    stop too), so that a restart resumes it; 0 keeps it after every compared request."""

    pull_timeout: float | None = Field(default=None, gt=0)
    """Seconds an operator's ``models pull`` may take before it is reported as timed out
    (the pull itself goes on in the background, each read bounded by its registry)."""

    def apply(self) -> Limits:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        return dataclasses.replace(Limits(), **overrides)


class AgentConfig(Section):
    site: str = "default"
    """A name for this installation (shown on the status page; not patient data)."""

    store: StoreConfig
    """Where verified bundles are kept."""

    trust: TrustConfig
    """Publisher keys whose signatures this agent accepts."""

    registries: list[RegistryConfig] = Field(default_factory=list)
    """Where bundles are pulled from."""

    models: list[ModelConfig] = Field(min_length=1)
    """The models this agent serves, each with its site mapping."""

    records: RecordsConfig = Field(default_factory=RecordsConfig)
    """How HL7 v2 coding systems and local times become FHIR."""

    http: HttpConfig = Field(default_factory=HttpConfig)
    mllp: MllpConfig = Field(default_factory=MllpConfig)
    drop_folder: DropFolderConfig = Field(default_factory=DropFolderConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        registries = {r.name for r in self.registries}
        if len(registries) != len(self.registries):
            raise ValueError("registry names must be unique")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        for model in self.models:
            if model.registry is not None and model.registry not in registries:
                raise ValueError(f"model {model.name!r} names unknown registry {model.registry!r}")
            if model.rollout == "canary" and self.audit.hmac_key_file is None:
                raise ValueError(
                    f"model {model.name!r}: a canary rollout needs audit.hmac_key_file "
                    "(the site secret that keys the choice of patients)"
                )
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def resolved_limits(self) -> Limits:
        return self.limits.apply()


def load_config(path: Path) -> AgentConfig:
    """Read and validate the agent config; every problem becomes a ``ConfigError`` naming
    ``file:line: key: what is wrong``."""
    document, lines = read_with_lines(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping")
    try:
        return AgentConfig.model_validate(document, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(_describe(path, lines, exc)) from None


def _describe(path: Path, lines: dict[KeyPath, int], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        location = tuple(error["loc"])
        key = ".".join(str(p) for p in location) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{path}:{line_of(lines, location)}: {key}: {message}")
    return "invalid configuration\n  " + "\n  ".join(problems)
