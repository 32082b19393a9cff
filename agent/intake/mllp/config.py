"""The ``mllp:`` section of the agent config and its ``results_to`` destination.

A leaf: ``agent/config.py`` composes it without importing the listener (or asyncio's
servers); the listener and the results sender read it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from agent.configbase import ConfigPath, Section, is_loopback
from agent.hl7.oru import ResultAddressing
from agent.mapping.spec import resolve_code

_NOT_IN_ADDRESS = re.compile(r"[|~\\&\x00-\x1f]")  # "^" separates components, allowed
_MESSAGE_TYPE = re.compile(r"^[A-Z0-9]{3}\^[A-Z0-9]{3}$")
_FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})-([1-9][0-9]{0,2})(?:\.([1-9][0-9]?))?$")


class ResultsDestination(Section):
    """Where ORU^R01 result messages go: the interface engine's inbound MLLP channel."""

    host: str
    """The destination's address (the interface engine, usually on the hospital LAN)."""

    port: int = Field(ge=1, le=65535)
    """The destination's TCP port."""

    spool: ConfigPath
    """Folder holding results not yet accepted (created 0700 if missing); ``rejected/``
    inside it keeps the ones the destination refused, each with its ACK."""

    tls: bool = False
    """Speak MLLP over TLS (1.2 or later), verifying the destination's certificate and name."""

    tls_ca: ConfigPath | None = None
    """CA bundle to verify the destination's certificate against; none uses the system's."""

    tls_cert: ConfigPath | None = None
    """PEM client certificate chain, for a destination that requires mutual TLS."""

    tls_key: ConfigPath | None = None
    """PEM private key of ``tls_cert``."""

    sending_application: str | None = None
    """MSH-3 of the result messages (``^`` separates components); None: the application
    the incoming message addressed (its MSH-5)."""

    sending_facility: str | None = None
    """MSH-4; None: the incoming MSH-6."""

    receiving_application: str | None = None
    """MSH-5 (the application that files the results, e.g. the EHR); None: the incoming
    message's sender (its MSH-3)."""

    receiving_facility: str | None = None
    """MSH-6; None: the incoming MSH-4."""

    spool_max_messages: int = Field(default=100_000, ge=1)
    """Results the spool may hold; with it full (the destination down for long), new
    messages are answered AE, so they stay with the interface engine."""

    ack_timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for the connection and then for each ACK before trying again."""

    retry_initial: float = Field(default=1.0, gt=0)
    """Seconds before the first retry after a transport failure; doubled on each failure."""

    retry_max: float = Field(default=60.0, gt=0)
    """Cap of the retry delay, in seconds."""

    @model_validator(mode="after")
    def _consistent(self) -> ResultsDestination:
        if (self.tls_ca or self.tls_cert) and not self.tls:
            raise ValueError("tls_ca and tls_cert need tls: true")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must be at least retry_initial")
        for key, value in self.addressing.__dict__.items():
            if value is not None and _NOT_IN_ADDRESS.search(value):
                raise ValueError(f"{key} may not hold HL7 delimiters other than ^ or line breaks")
        return self

    @property
    def addressing(self) -> ResultAddressing:
        """MSH-3..6 as configured, for ``build_result_message``."""
        return ResultAddressing(
            self.sending_application,
            self.sending_facility,
            self.receiving_application,
            self.receiving_facility,
        )


@dataclass(frozen=True)
class FieldPath:
    """A field (and component) of a segment as interface analysts write it: ``PV1-36``,
    ``PV1-3.1`` (component 1 when none is given)."""

    segment: str
    field: int
    component: int = 1

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        match = _FIELD.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a field such as PV1-36 or OBX-5.1")
        return cls(match[1], int(match[2]), int(match[3] or 1))

    def __str__(self) -> str:
        return f"{self.segment}-{self.field}" + (f".{self.component}" if self.component > 1 else "")


DEFAULT_OUTCOME_TIME = ("OBX-14", "EVN-6", "EVN-2", "MSH-7")


class OutcomeMessage(Section):
    """One kind of HL7 v2 message that reports an outcome instead of asking for a score
    (docs/mllp.md, "Outcomes"): an ORU^R01 whose OBX carries a configured code with a 0/1
    or coded value, an ADT^A03 whose discharge disposition says death, an ADT^A02 to an
    ICU location. Each matching segment gives one outcome for the patient of the PID before
    it, named by PID-3 as the scored messages name it."""

    message: str
    """MSH-9 message code and trigger event, ``ORU^R01`` or ``ADT^A03``."""

    model: str | None = None
    """The model the outcome labels; None: the listener's ``model``."""

    code: str | None = None
    """``system|code`` (``loinc|...``, ``snomed|...`` or a system URI, as in a site
    mapping): the OBX segments whose OBX-3 (primary or alternate coding) carries it report
    the outcome, and a message of this type without one is scored as usual. None: every
    message of this type is an outcome message, read from ``field``."""

    field: str | None = None
    """Where the outcome's value is read (``PV1-36``, ``PV1-3.1``); with ``code``, an OBX
    field (default ``OBX-5``, the observation value, its first component for a coded one)."""

    positive: list[str] = Field(min_length=1)
    """Values of ``field`` that mean the event happened (label 1): ``["1"]``, ``["Y"]``,
    the death dispositions (``["20"]``), the ICU points of care (``["ICU", "MICU"]``)."""

    negative: list[str] = Field(default_factory=list)
    """Values that mean it did not happen (label 0), e.g. ``["0"]``. A value in neither
    list is not an outcome: the message is answered AE ``no_outcome``."""

    time: list[str] = Field(default_factory=lambda: list(DEFAULT_OUTCOME_TIME))
    """Where the outcome's time is read, the first valued one winning: a field of the
    matching segment, else of the nearest segment of that name before it (``EVN-6`` event
    occurred, ``EVN-2`` recorded, ``MSH-7`` message time). Read in ``records.hl7_timezone``
    when it carries no offset."""

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
        if not _MESSAGE_TYPE.match(value):
            raise ValueError("must be MSH-9 code^event, such as ORU^R01 or ADT^A03")
        return value

    @field_validator("code")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        if value is not None:
            system, code = resolve_code(value)
            return f"{system}|{code}"
        return value

    @field_validator("field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        return str(FieldPath.parse(value)) if value is not None else None

    @field_validator("time")
    @classmethod
    def _time(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one field to read the time from")
        return [str(FieldPath.parse(text)) for text in value]

    @model_validator(mode="after")
    def _consistent(self) -> OutcomeMessage:
        if self.code is None and self.field is None:
            raise ValueError("give code (an OBX code), field (where the value is), or both")
        if self.code is not None and self.value_field.segment != "OBX":
            raise ValueError("with code, field must be an OBX field (default OBX-5)")
        if set(self.positive) & set(self.negative):
            raise ValueError("a value cannot be both positive and negative")
        return self

    @property
    def value_field(self) -> FieldPath:
        return FieldPath.parse(self.field or "OBX-5")

    @property
    def time_fields(self) -> tuple[FieldPath, ...]:
        return tuple(FieldPath.parse(text) for text in self.time)


class AckMode(StrEnum):
    results = "results"
    """AA carries each prediction's outputs as OBX segments after MSA (non-standard in an
    ACK, accepted by the usual interface engines)."""

    plain = "plain"
    """AA is a standard ACK (MSH, MSA): the results go only to metrics and the audit log."""


class MllpConfig(Section):
    enabled: bool = False
    """Listen for HL7 v2 over MLLP."""

    host: str = "127.0.0.1"
    """Address to bind."""

    port: int = Field(default=2575, ge=0, le=65535)
    """TCP port (2575 is the IANA port for HL7 over MLLP; 0 picks a free port, for tests)."""

    model: str | None = None
    """The model every message on this listener is scored with (required when enabled)."""

    ack_mode: AckMode = AckMode.results
    """What an AA carries: ``results`` (OBX segments with the outputs) or ``plain``."""

    max_message_bytes: int | None = Field(default=None, gt=0)
    """Bytes in one frame; None uses ``limits.hl7_message_max``. A larger frame gets AR."""

    max_connections: int = Field(default=32, ge=1)
    """Concurrent connections; one more is closed before it sends anything."""

    max_connections_per_client: int = Field(default=8, ge=1)
    """Concurrent connections from one client address; one more is closed before it sends
    anything, so a single client (a misconfigured engine, or anyone on its host) cannot
    hold every one of ``max_connections``. An interface engine needs one per channel."""

    idle_timeout: float = Field(default=600.0, gt=0)
    """Seconds a connection may go without completing a frame, counted from its start or
    its last answer: silent, or dripping an unfinished frame however slowly (the deadline
    does not restart on each byte). Then the listener closes it."""

    handshake_timeout: float = Field(default=10.0, gt=0)
    """Seconds a TLS client has to finish its handshake before it is dropped."""

    tls_cert: ConfigPath | None = None
    """PEM certificate chain: serve MLLP over TLS."""

    tls_key: ConfigPath | None = None
    """PEM private key of ``tls_cert``."""

    tls_client_ca: ConfigPath | None = None
    """CA bundle to require and verify client certificates against (mutual TLS)."""

    allowed_clients: list[str] = Field(default_factory=list)
    """Client addresses or networks (``10.1.2.3``, ``10.1.0.0/16``) allowed to connect;
    empty allows any. Others are closed before anything is read. Any address beyond
    loopback requires TLS (``tls_cert``), since an allow-list is no protection for the
    messages on the wire."""

    results_to: ResultsDestination | None = None
    """Also send each scored message's results as an ORU^R01 to this MLLP destination (the
    interface engine), through a durable spool; None sends none (docs/mllp.md)."""

    outcomes: list[OutcomeMessage] = Field(default_factory=list)
    """Messages that report outcomes (a death, an ICU transfer, a coded result) to join to
    earlier predictions for live performance (``performance.enabled``), answered AA when
    recorded; every other message is scored. Empty: every message is scored."""

    @model_validator(mode="after")
    def _consistent(self) -> MllpConfig:
        if self.enabled and not self.model:
            raise ValueError("an enabled MLLP listener needs the model to score with")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        networks = [ipaddress.ip_network(entry, strict=False) for entry in self.allowed_clients]
        if self.tls_cert is None and not all(net.is_loopback for net in networks):
            raise ValueError(
                "allowed_clients beyond loopback requires TLS (tls_cert, tls_key): HL7 in"
                " clear text must not cross the network"
            )
        if not is_loopback(self.host) and not (self.allowed_clients or self.tls_client_ca):
            raise ValueError(
                f"binding {self.host} (not loopback) requires allowed_clients or tls_client_ca"
            )
        return self
