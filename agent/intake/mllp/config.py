"""The ``mllp:`` section of the agent config and its ``results_to`` destination.

A leaf: ``agent/config.py`` composes it without importing the listener (or asyncio's
servers); the listener and the results sender read it.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum

from pydantic import Field, model_validator

from agent.configbase import ConfigPath, Section, is_loopback
from agent.hl7.oru import ResultAddressing

_NOT_IN_ADDRESS = re.compile(r"[|~\\&\x00-\x1f]")  # "^" separates components, allowed


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

    idle_timeout: float = Field(default=600.0, gt=0)
    """Seconds a connection may stay silent (or sit on an unfinished frame) before the
    listener closes it."""

    tls_cert: ConfigPath | None = None
    """PEM certificate chain: serve MLLP over TLS."""

    tls_key: ConfigPath | None = None
    """PEM private key of ``tls_cert``."""

    tls_client_ca: ConfigPath | None = None
    """CA bundle to require and verify client certificates against (mutual TLS)."""

    allowed_clients: list[str] = Field(default_factory=list)
    """Client addresses or networks (``10.1.2.3``, ``10.1.0.0/16``) allowed to connect;
    empty allows any. Others are closed before anything is read."""

    results_to: ResultsDestination | None = None
    """Also send each scored message's results as an ORU^R01 to this MLLP destination (the
    interface engine), through a durable spool; None sends none (docs/mllp.md)."""

    @model_validator(mode="after")
    def _consistent(self) -> MllpConfig:
        if self.enabled and not self.model:
            raise ValueError("an enabled MLLP listener needs the model to score with")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        for entry in self.allowed_clients:
            ipaddress.ip_network(entry, strict=False)
        if not is_loopback(self.host) and not (self.allowed_clients or self.tls_client_ca):
            raise ValueError(
                f"binding {self.host} (not loopback) requires allowed_clients or tls_client_ca"
            )
        return self
