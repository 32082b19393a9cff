"""The ``registries:`` config entries: where bundles are pulled from and how often.

The keys that sign a registry's index are the trust store's publisher keys (``trust:``);
a registry has no keys of its own, so trusting a registry and trusting a publisher are
one decision.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, ValidationInfo, field_validator

from agent.configbase import ConfigPath, Section

SCHEMES = ("file", "https", "oci")


class RegistryConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    """A short name for logs, metrics and ``models[].registry`` (letters, digits, . _ -)."""

    url: str
    """``file:///abs/folder`` (a share or USB stick), ``https://host/path`` (any static web
    server or object store) or ``oci://host[:port]/repository``. Plain http is refused.
    ``file:relative/folder`` (no slashes after the colon) is relative to the config file."""

    poll_interval: float = Field(default=300.0, ge=1.0)
    """Seconds between polls of this registry when all is well."""

    backoff_max: float = Field(default=3600.0, ge=1.0)
    """Longest wait in seconds between polls while the registry keeps failing (the wait
    doubles from ``poll_interval`` after each failed poll, up to this)."""

    ca_file: ConfigPath | None = None
    """PEM bundle of the CA(s) to trust for https (the hospital's own CA); replaces the
    system roots for this registry. Relative to the config file."""

    timeout: float = Field(default=60.0, gt=0)
    """Seconds one download (index or bundle) may take end to end."""

    retries: int = Field(default=3, ge=0, le=10)
    """Extra attempts after a transport error (connection refused, reset, HTTP 5xx), with
    exponential backoff starting at ``retry_delay``."""

    retry_delay: float = Field(default=0.5, ge=0)
    """Seconds before the first retry; doubled for each further one."""

    @field_validator("url", mode="before")
    @classmethod
    def _relative_file_url(cls, value: object, info: ValidationInfo) -> object:
        """``file:folder`` -> ``file:///<config dir>/folder``, so a shipped config (the demo)
        works wherever the repository is cloned."""
        if isinstance(value, str) and value.startswith("file:") and not value.startswith("file:/"):
            base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
            folder = Path(base or ".") / value.removeprefix("file:")
            return folder.resolve().as_uri()
        return value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in SCHEMES:
            raise ValueError(f"registry url scheme must be one of {', '.join(SCHEMES)}")
        if scheme == "file" and not urlparse(value).path.startswith("/"):
            raise ValueError("a file:// registry url needs an absolute path (file:///srv/reg)")
        return value
