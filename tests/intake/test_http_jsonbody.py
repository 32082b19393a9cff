"""JSON answers rendered by orjson are byte for byte what the stdlib (Starlette's
``JSONResponse``) renders, and fail where it fails: floats of every magnitude, strings of
every code point, and each kind of content orjson renders differently or refuses."""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.intake.http.jsonbody import JsonBody, json_bytes, stdlib_json


def _floats(count: int) -> list[float]:
    """Finite floats of every magnitude: random bit patterns (subnormals included), and
    values from 1e-12 to 1e22 of both signs, where the two renderings part ways below 1e-4."""
    rng = random.Random(14)
    floats: list[float] = []
    while len(floats) < count:
        bits = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if math.isfinite(bits):
            floats.append(bits)
        floats.append(rng.choice((1, -1)) * rng.random() * 10.0 ** rng.randint(-12, 22))
    return floats


def test_every_float_renders_as_the_stdlib_renders_it() -> None:
    floats = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e-5, 5e-324, 1e16, 2.0**53, *_floats(20_000)]
    for value in floats:
        assert json_bytes({"p": value}) == stdlib_json({"p": value}), value
    assert json_bytes(floats) == stdlib_json(floats)


def test_every_character_renders_as_the_stdlib_renders_it() -> None:
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert json_bytes({"text": text}) == stdlib_json({"text": text})


@pytest.mark.parametrize(
    "content",
    [
        {"model": "m", "scored": 1, "ok": True, "no": False, "patient": None, "list": [1, [2.5]]},
        {"big": 2**64, "small": -(2**63)},  # orjson refuses integers beyond 64 bits
        {1: "a", None: "b"},  # keys the stdlib turns into strings, orjson refuses
        ("a", 1.5),
        {"detail": "date-time e-mail 0.00001 null"},  # text that only looks like a number
    ],
)
def test_content_renders_as_the_stdlib_renders_it(content: Any) -> None:
    assert json_bytes(content) == stdlib_json(content)


@dataclass
class _Record:
    value: float


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ({"p": math.nan}, ValueError),  # orjson would write null
        ({"p": -math.inf}, ValueError),
        ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, TypeError),  # orjson would write text
        ({"record": _Record(1.0)}, TypeError),  # orjson would write an object
        ({"text": "\ud800"}, UnicodeEncodeError),  # a lone surrogate
    ],
)
def test_what_the_stdlib_refuses_is_refused_the_same_way(
    content: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        stdlib_json(content)
    with pytest.raises(error):
        json_bytes(content)


def test_a_json_body_is_a_json_response_with_the_same_bytes() -> None:
    content = {"outputs": {"probability_1": 0.1977190375328064, "tiny": 4.1e-05}}
    response = JsonBody(content, status_code=422, media_type="application/fhir+json")
    assert response.body == stdlib_json(content)
    assert response.raw_headers == [
        (b"content-length", str(len(response.body)).encode()),
        (b"content-type", b"application/fhir+json"),
    ]
