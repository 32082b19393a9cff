"""Which patients a canary candidate answers: chosen by a keyed hash of the patient
reference, so a patient stays with one version from request to request (and across
restarts), and nobody without the site secret can tell or steer which patients are in
the canary share."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from agent.errors import ConfigError

_PURPOSE = b"edge-agent canary v1"  # the canary key is derived, never the site secret itself
_SPAN = 2**64


def canary_key(secret_file: Path | None) -> bytes | None:
    """The canary key derived from the site secret in ``secret_file`` (the audit HMAC key),
    so the canary hash of a reference never equals the audit log's HMAC of anything; None
    without a secret (a canary rollout requires one)."""
    if secret_file is None:
        return None
    try:
        secret = secret_file.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{secret_file}: cannot read the site secret: {exc.strerror}") from None
    if len(secret) < 16:
        raise ConfigError("the site secret must be at least 16 bytes")
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


def in_canary(key: bytes | None, reference: str, share: float) -> bool:
    """True when the patient named ``reference`` is answered by the candidate. A record
    that names no patient, or a site without a secret (``key`` None), stays with the active
    version."""
    if key is None or not reference:
        return False
    digest = hmac.new(key, reference.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") < share * _SPAN
