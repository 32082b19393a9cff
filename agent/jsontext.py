"""JSON as the agent reads it from outside: strict and bounded. A leaf module.

Python's parser accepts ``NaN``, ``Infinity`` and ``1e400`` (read as infinity), which JSON
does not, and raises a bare RecursionError on deeply nested input; every body the agent
parses goes through ``load_json`` so that each of these is a typed RecordError naming where,
never a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

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
