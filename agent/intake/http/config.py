"""Configuration of the HTTP intake: where it listens and who may call it.

Kept apart from the ASGI app so that ``edge-agent config check`` validates it without
importing the web stack.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.configbase import ConfigPath, Section, is_loopback


class HttpConfig(Section):
    enabled: bool = True
    """Serve the HTTP API (predict, Open Inference Protocol, CDS Hooks, health, metrics)."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires TLS and authentication."""

    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port (0 picks a free port, for tests)."""

    tls_cert: ConfigPath | None = None
    """PEM certificate chain served to clients."""

    tls_key: ConfigPath | None = None
    """PEM private key of ``tls_cert``."""

    tls_client_ca: ConfigPath | None = None
    """CA bundle to require and verify client certificates (mutual TLS) against."""

    bearer_token_sha256: list[str] = Field(default_factory=list)
    """SHA-256 (hex) of each accepted bearer token; tokens themselves never sit in config."""

    max_concurrent_per_client: int = Field(default=16, ge=1)
    """Requests one client address may have in flight before getting HTTP 429."""

    @model_validator(mode="after")
    def _secure_off_loopback(self) -> HttpConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not is_loopback(self.host):
            if self.tls_cert is None:
                raise ValueError(
                    f"binding {self.host} (not loopback) requires TLS: set tls_cert and tls_key"
                )
            if not self.bearer_token_sha256 and self.tls_client_ca is None:
                raise ValueError(
                    f"binding {self.host} (not loopback) requires authentication: set "
                    "bearer_token_sha256 or tls_client_ca"
                )
        return self

    @property
    def auth_required(self) -> bool:
        return bool(self.bearer_token_sha256)
