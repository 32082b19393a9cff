"""The one strict JSON reader: orjson's speed, the stdlib's acceptance, no NaN or infinity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import FhirError, RecordError
from agent.jsontext import load_json

FHIR = Path(__file__).resolve().parents[2] / "fixtures" / "fhir"


@pytest.mark.parametrize("name", ["demo-patient-bundle.json", "local-site-bundle.json"])
def test_same_document_as_the_stdlib(name: str) -> None:
    body = (FHIR / name).read_bytes()
    assert load_json(body, "body") == json.loads(body)
    assert load_json(body.decode(), "body") == json.loads(body)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b'{"a": NaN}', "a number is NaN or infinite"),
        (b'{"a": -Infinity}', "a number is NaN or infinite"),
        (b'{"a": 1e400}', "a number is NaN or infinite"),
        (b'{"a": ' + b"9" * 5000 + b"}", "a number is out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b'{"a": 1,}', "not valid JSON (Expecting property name"),
    ],
)
def test_refusals_say_why_and_where(text: bytes, why: str) -> None:
    with pytest.raises(FhirError) as caught:
        load_json(text, "line 3", FhirError)
    assert str(caught.value).startswith("line 3: ")
    assert why in str(caught.value)


def test_what_the_stdlib_accepted_and_orjson_refuses_is_still_read() -> None:
    """A byte order mark, UTF-16 and a lone surrogate were read before orjson: still so."""
    assert load_json(b'\xef\xbb\xbf{"a": 1}', "body") == {"a": 1}
    assert load_json('{"a": 1}'.encode("utf-16"), "body") == {"a": 1}
    assert load_json(b'{"a": "\\ud800"}', "body") == {"a": "\ud800"}


def test_default_error_is_a_record_error() -> None:
    with pytest.raises(RecordError, match="body: not valid JSON"):
        load_json(b"{", "body")
