"""JSON as the agent reads it from outside: strict and bounded. A leaf module.

Every body the agent parses goes through ``load_json``, so that whatever is not strict JSON
(``NaN``, ``Infinity``, ``1e400`` read as infinity, integers past Python's digit limit, deep
nesting) is a typed RecordError naming where, never a 500 and never a value.

It parses with orjson, at about half the stdlib's cost on a FHIR Bundle
(docs/benchmarks.md), which refuses all of the above. orjson is stricter than the stdlib in
a few ways the stdlib accepted before (a UTF-8 byte order mark, UTF-16 text, a lone
surrogate, nesting past 1,024 levels): input orjson refuses is parsed again by the stdlib,
made as strict as orjson on numbers, which either accepts it as before or says why in its
own words (line and column). Integers beyond 64 bits become floats in orjson, where no FHIR
element can take them anyway (integer is 32-bit, decimal a double).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from agent.errors import RecordError


class _NonFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite
    return value


def _refuse_constant(_: str) -> Any:
    raise _NonFinite


def load_json(text: bytes | str, where: str, error: type[RecordError] = RecordError) -> Any:
    """``text`` parsed, or ``error`` naming ``where`` and what is wrong (never a value)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _stdlib(text, where, error)


def _stdlib(text: bytes | str, where: str, error: type[RecordError]) -> Any:
    """``text`` parsed by the stdlib, refusing NaN and infinities; else ``error`` saying why."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_refuse_constant)
    except _NonFinite:
        raise error(f"{where}: not valid JSON (a number is NaN or infinite)") from None
    except json.JSONDecodeError as exc:
        raise error(
            f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except UnicodeDecodeError:
        raise error(f"{where}: not valid UTF-8") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply") from None
    except ValueError:  # e.g. an integer longer than Python's digit limit
        raise error(f"{where}: not valid JSON (a number is out of range)") from None
