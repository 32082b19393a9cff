import hashlib

import pytest
from pydantic import ValidationError

from agent.intake.http.config import HttpConfig


def test_loopback_needs_nothing() -> None:
    assert HttpConfig(host="127.0.0.1").auth_required is False
    assert HttpConfig(host="::1").host == "::1"
    assert HttpConfig(host="localhost").port == 8080


def test_public_bind_without_tls_is_refused() -> None:
    with pytest.raises(ValidationError, match="requires TLS"):
        HttpConfig(host="0.0.0.0")


def test_public_bind_with_tls_but_no_auth_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="requires authentication"):
        HttpConfig(host="0.0.0.0", tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")


def test_public_bind_with_tls_and_token_is_accepted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    token_hash = hashlib.sha256(b"s3cret").hexdigest()
    config = HttpConfig(
        host="0.0.0.0",
        tls_cert=tmp_path / "c.pem",
        tls_key=tmp_path / "k.pem",
        bearer_token_sha256=[token_hash],
    )
    assert config.auth_required


def test_cert_without_key_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="go together"):
        HttpConfig(tls_cert=tmp_path / "c.pem")
