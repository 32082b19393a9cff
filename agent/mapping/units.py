"""UCUM units and conversions: a table for the units clinical mappings use, ucumvert's UCUM
grammar over pint for any other.

Every conversion the agent needs is affine (``y = scale * x + offset``: mmol/L, 10*3/uL,
degF), so it is worked out once and then applied as two float operations. Units in
``ucum_table`` (generated from pint, and checked against it by a test) are converted from
the table alone, so a mapping that uses only those never imports pint and ucumvert (about
30 MiB of RSS, 0.7 s to build the registry); any other unit is worked out by pint, imported
then. A mass concentration converts to a substance concentration (creatinine mg/dL ->
umol/L) only with a molar mass the mapping states; pint alone cannot know it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from agent.errors import UnitError
from agent.mapping.ucum_table import GRAM_PER_MOLE, UNITS

_MASS, _SUBSTANCE = "[mass]", "[substance]"


@cache
def _registry() -> Any:
    """The UCUM registry takes ~0.7 s to build: once per process, on first use."""
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@dataclass(frozen=True)
class Conversion:
    """``y = scale * x + offset``; ``label`` says what was converted (None: nothing)."""

    scale: float = 1.0
    offset: float = 0.0
    label: str | None = None

    def __call__(self, value: float) -> float:
        return self.scale * value + self.offset


IDENTITY = Conversion()


def _quantity(unit: str) -> Any:
    """1 <unit> as a pint Quantity; UnitError if ``unit`` is not valid UCUM."""
    registry = _registry()
    text = unit.strip()
    if text.startswith("{") and text.endswith("}") and "}" not in text[1:-1]:
        text = "1"  # a bare annotation such as {count} is the unit 1
    try:
        parsed = registry.from_ucum(text)
    except Exception:  # ucumvert raises lark errors, AttributeError, pint errors...
        raise UnitError(f"{unit!r} is not a valid UCUM unit") from None
    if not hasattr(parsed, "units"):
        raise UnitError(f"{unit!r} is not a valid UCUM unit")
    return parsed


def check_unit(unit: str) -> None:
    """UnitError unless ``unit`` is valid UCUM."""
    if unit not in UNITS:
        _quantity(unit)


def _dimension_with(
    dimension: tuple[tuple[str, int], ...], step: int
) -> tuple[tuple[str, int], ...]:
    """``dimension`` with ``step`` mass swapped for substance (-1: substance for mass)."""
    exponents = dict(dimension)
    exponents[_MASS] = exponents.get(_MASS, 0) - step
    exponents[_SUBSTANCE] = exponents.get(_SUBSTANCE, 0) + step
    return tuple(sorted((k, v) for k, v in exponents.items() if v))


def _from_table(source: str, target: str, molar_mass: float | None) -> Conversion | None:
    """The conversion from the table, None when a unit is not in it or the two measure
    different things (pint then says why)."""
    if source not in UNITS or target not in UNITS:
        return None
    (src_dim, src_scale, src_offset), (dst_dim, dst_scale, dst_offset) = (
        UNITS[source],
        UNITS[target],
    )
    label = f"{source} -> {target}"
    factor = 1.0
    if src_dim != dst_dim:
        if molar_mass is None:
            return None
        molar = molar_mass * GRAM_PER_MOLE
        if _dimension_with(src_dim, 1) == dst_dim:
            factor = 1.0 / molar  # mass -> substance
        elif _dimension_with(src_dim, -1) == dst_dim:
            factor = molar  # substance -> mass
        else:
            return None
        label = f"{source} -> {target} (molar mass {molar_mass:g} g/mol)"
    scale = src_scale * factor / dst_scale
    offset = (src_offset * factor - dst_offset) / dst_scale
    return Conversion(scale=scale, offset=offset, label=label)


@lru_cache(maxsize=512)
def conversion(source: str, target: str, molar_mass: float | None = None) -> Conversion:
    """The affine conversion from UCUM ``source`` to UCUM ``target``; UnitError if either is
    not UCUM or they measure different things (mass <-> substance needs ``molar_mass``, g/mol).

    Cached: record units come from a small set, but the cache is bounded because they are
    caller-supplied text.
    """
    if source == target:
        return IDENTITY
    tabled = _from_table(source, target, molar_mass)
    if tabled is not None:
        return tabled
    import pint

    src, dst = _quantity(source), _quantity(target)
    registry = _registry()
    label = f"{source} -> {target}"

    def at(x: float, via: float | None) -> float:
        value = registry.Quantity(x * src.magnitude, src.units)
        if via is not None:
            value = value / registry.Quantity(via, "g/mol")
            if value.dimensionality != dst.dimensionality:
                value = value * registry.Quantity(via, "g/mol") ** 2
        return float(value.to(dst.units).magnitude / dst.magnitude)

    try:
        zero, one = at(0.0, None), at(1.0, None)
    except pint.DimensionalityError:
        if molar_mass is None:
            mixed = ("[substance]" in str(src.dimensionality)) != (
                "[substance]" in str(dst.dimensionality)
            )
            hint = " (a mass <-> substance conversion needs molar_mass)" if mixed else ""
            raise UnitError(f"{source} cannot be converted to {target}{hint}") from None
        try:
            zero, one = at(0.0, molar_mass), at(1.0, molar_mass)
        except (pint.DimensionalityError, pint.OffsetUnitCalculusError):
            # an offset unit (Cel, [degF]) divided by a molar mass: no amount of anything
            raise UnitError(f"{source} cannot be converted to {target}") from None
        label = f"{source} -> {target} (molar mass {molar_mass:g} g/mol)"
    return Conversion(scale=one - zero, offset=zero, label=label)
