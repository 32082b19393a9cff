"""FHIR R4 datatypes by their own rules, without the fhir.resources models: the primitives'
regular expressions (https://hl7.org/fhir/R4/datatypes.html) and, for complex types, the
structure table ``r4_structures.STRUCTURES`` generated from the R4B models.

Shared by the ``essential`` checks of what the agent's own code reads
(``fhir_essential``) and the check of every element a mapping's FHIRPath can reach
(``check_elements``), so both apply the same rule to the same datatype. Faults are raised as
``Invalid`` with the element path below the resource and why, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from agent.records.fhir_r4 import UNKNOWN_ELEMENT
from agent.records.r4_structures import STRUCTURES

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_CLOCK = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_TIME = _CLOCK + r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
ID_PATTERN = r"[A-Za-z0-9\-\.]{1,64}"
ID = re.compile(ID_PATTERN).fullmatch
CODE = re.compile(r"[^\s]+(\s[^\s]+)*").fullmatch
URI = re.compile(r"\S*").fullmatch
STRING = re.compile(r"[ \r\n\t\S]+").fullmatch
DATE = re.compile(f"{_YEAR}(-{_MONTH}(-{_DAY})?)?").fullmatch
DATETIME = re.compile(f"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME})?)?)?").fullmatch
INSTANT = re.compile(f"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}").fullmatch
# The usual shape of a dateTime or instant (a full time with an offset), in a simpler
# expression than the two above (a third of their cost): whatever it accepts and
# ``datetime.fromisoformat`` then reads (a real day, hours to 23, no year 0) matches them too.
_FULL_TIME = re.compile(
    r"[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
    r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00)"
).fullmatch
_CLOCK_TIME = re.compile(_CLOCK).fullmatch
_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+").fullmatch
_UUID = re.compile(
    r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
).fullmatch
_BASE64 = re.compile(r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+").fullmatch

INTEGER_MAX = 2**31 - 1  # FHIR integer is 32-bit signed
DATATYPE = "value does not match the FHIR datatype"


class Invalid(Exception):
    """An element breaks its rule: ``path`` below the resource, and why (never the value)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(path, why)
        self.path = path
        self.why = why

    def under(self, prefix: str) -> Invalid:
        """The same fault seen from the enclosing element (paths are built only on failure)."""
        self.path = prefix + self.path
        return self


# --- primitives ---------------------------------------------------------------------------


def text(value: Any, path: str, match: Callable[[str], Any]) -> None:
    """A string primitive (string, uri, code, id, ...) matching its datatype's expression."""
    if not isinstance(value, str):
        raise Invalid(path, "expected a string")
    if match(value) is None:
        raise Invalid(path, DATATYPE)


def is_code(value: Any) -> bool:
    """FHIR code (``CODE``): no whitespace but single inner spaces. Printable text holds no
    whitespace but the space (see ``is_string``), so most codes need no expression."""
    if not isinstance(value, str):
        return False
    if value.isprintable():
        return value != "" and value[0] != " " and value[-1] != " " and "  " not in value
    return CODE(value) is not None


def is_string(value: Any) -> bool:
    """FHIR string: non-empty, no whitespace but space, CR, LF and tab. ``isprintable`` is a
    fast exact answer for most text (it refuses every whitespace character but space)."""
    return (
        isinstance(value, str)
        and bool(value)
        and (value.isprintable() or STRING(value) is not None)
    )


def is_uri(value: Any) -> bool:
    """FHIR uri: no whitespace at all (``\\S*``); fast path as in ``is_string``."""
    return isinstance(value, str) and (
        (value.isprintable() and " " not in value) or URI(value) is not None
    )


def kind_fault(value: Any) -> str:
    """Why a string primitive was refused, without quoting it."""
    return DATATYPE if isinstance(value, str) else "expected a string"


def when(value: Any, path: str, match: Callable[[str], Any]) -> None:
    """date / dateTime / instant: the datatype's expression, then a real day and time."""
    if match is not DATE and isinstance(value, str) and _FULL_TIME(value) is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise Invalid(path, DATATYPE) from None
        return
    text(value, path, match)
    try:
        if len(value) > 10:
            datetime.fromisoformat(value)
        elif len(value) == 10:
            date.fromisoformat(value)
    except ValueError:
        raise Invalid(path, DATATYPE) from None


def _integer(value: Any, path: str, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(path, "expected an integer")
    if not low <= value <= INTEGER_MAX:
        raise Invalid(path, "integer out of range")


def decimal(value: Any, path: str) -> None:
    """A JSON number that fits a double (the JSON reader already refuses NaN and Infinity)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Invalid(path, "expected a number")
    try:
        float(value)
    except OverflowError:
        raise Invalid(path, "number out of range") from None


def _string_kind(check: Callable[[Any], bool]) -> Callable[[Any, str], None]:
    def run(value: Any, path: str) -> None:
        if not check(value):
            raise Invalid(path, kind_fault(value))

    return run


def _matching(match: Callable[[str], Any]) -> Callable[[Any, str], None]:
    return lambda value, path: text(value, path, match)


def _dated(match: Callable[[str], Any]) -> Callable[[Any, str], None]:
    return lambda value, path: when(value, path, match)


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise Invalid(path, "expected a boolean")


def _xhtml(value: Any, path: str) -> None:
    if not isinstance(value, str) or not value:
        raise Invalid(path, "expected a string")


_PRIMITIVES: dict[str, Callable[[Any, str], None]] = {
    "boolean": _boolean,
    "integer": lambda value, path: _integer(value, path, -INTEGER_MAX - 1),
    "unsignedInt": lambda value, path: _integer(value, path, 0),
    "positiveInt": lambda value, path: _integer(value, path, 1),
    "decimal": decimal,
    "string": _string_kind(is_string),
    "markdown": _string_kind(is_string),
    "uri": _string_kind(is_uri),
    "url": _string_kind(is_uri),
    "canonical": _string_kind(is_uri),
    "code": _string_kind(is_code),
    "id": _matching(ID),
    "oid": _matching(_OID),
    "uuid": _matching(_UUID),
    "base64Binary": _matching(_BASE64),
    "time": _matching(_CLOCK_TIME),
    "date": _dated(DATE),
    "dateTime": _dated(DATETIME),
    "instant": _dated(INSTANT),
    "xhtml": _xhtml,
}


# --- complex types ------------------------------------------------------------------------


@lru_cache(maxsize=64)
def reached_keys(resource_type: str, names: frozenset[str] | None) -> frozenset[str]:
    """The top-level elements of ``resource_type`` that FHIRPath using ``names`` can reach:
    an element named, every element of a choice named (``value`` -> ``valueQuantity``, ...),
    and their primitive extensions (``_gender``); all of them when ``names`` is None."""
    fields = STRUCTURES[resource_type]
    keys = {
        key
        for key, (_, _, _, choice) in fields.items()
        if names is None or key in names or (choice is not None and choice in names)
    }
    return frozenset(keys | {f"_{key}" for key in keys if fields[key][0][0].islower()})


def check_elements(resource: dict[str, Any], resource_type: str, keys: Iterable[str]) -> None:
    """Check the elements ``keys`` of ``resource`` (those present), each with its whole
    subtree, by the R4 rules of their types; Invalid at the first fault. Contained resources
    (type ``Resource``) are left to the caller."""
    fields = STRUCTURES[resource_type]
    seen: set[str] = set()
    for key in keys:
        if key in resource:
            _element(resource, key, fields, seen, "")


def check_structure(value: Any, type_name: str, path: str) -> None:
    """A whole complex-type value: an object holding only elements of ``type_name``, the
    required ones present, at most one per choice, each by its type's rule."""
    if not isinstance(value, dict):
        raise Invalid(path, "expected an object")
    fields = STRUCTURES[type_name]
    seen: set[str] = set()
    for key in value:
        if key not in fields and key != "fhir_comments" and not _extends_primitive(key, fields):
            raise Invalid(path, UNKNOWN_ELEMENT)  # the key is input: its parent is named
        _element(value, key, fields, seen, path)
    for key, (_, _, required, _) in fields.items():
        if required and key not in value and f"_{key}" not in value:
            raise Invalid(f"{path}.{key}", "required element is missing")


def _extends_primitive(key: str, fields: dict[str, tuple[str, bool, bool, str | None]]) -> bool:
    """``_key`` names the primitive extension of a primitive element ``key``."""
    return key.startswith("_") and key[1:] in fields and fields[key[1:]][0][0].islower()


def _element(
    holder: dict[str, Any],
    key: str,
    fields: dict[str, tuple[str, bool, bool, str | None]],
    seen: set[str],
    path: str,
) -> None:
    """One element of ``holder`` by its entry in ``fields``; ``seen``: choices met so far."""
    if key == "fhir_comments":
        return
    value = holder[key]
    if key.startswith("_") and key not in fields:
        _primitive_extension(value, fields[key[1:]][1], f"{path}.{key}")
        return
    kind, many, _, choice = fields[key]
    if choice is not None:
        if choice in seen:
            raise Invalid(f"{path}.{choice}[x]", "more than one element of this choice")
        seen.add(choice)
    if kind == "Resource":
        return
    here = f"{path}.{key}"
    if not many:
        _one(value, kind, here)
        return
    if not isinstance(value, list):
        raise Invalid(here, "expected an array")
    primitive = kind[0].islower()
    for index, item in enumerate(value):
        if item is None and primitive:
            continue  # aligned with a primitive extension in ``_key``
        _one(item, kind, f"{here}[{index}]")


def _one(value: Any, kind: str, path: str) -> None:
    if kind[0].islower():
        _PRIMITIVES[kind](value, path)
    else:
        check_structure(value, kind, path)


def _primitive_extension(value: Any, many: bool, path: str) -> None:
    """``_key``: an Element (``id``, ``extension``) or, for an array, a list of them or null."""
    items = value if many and isinstance(value, list) else [value]
    if many and not isinstance(value, list):
        raise Invalid(path, "expected an array")
    for index, item in enumerate(items):
        if item is None and many:
            continue
        try:
            if not isinstance(item, dict):
                raise Invalid("", "expected an object")
            for key in item:
                if key not in ("id", "extension", "fhir_comments"):
                    raise Invalid("", UNKNOWN_ELEMENT)  # the key is input: not quoted
            if "id" in item and not is_string(item["id"]):
                raise Invalid(".id", kind_fault(item["id"]))
            if "extension" in item:
                _element(item, "extension", STRUCTURES["Extension"], set(), "")
        except Invalid as bad:
            raise bad.under(f"{path}[{index}]" if many else path) from None
