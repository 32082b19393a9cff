"""The UCUM table converts as pint does, and a mapping whose units are all in it never
imports pint."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest

from agent.mapping.ucum_table import GRAM_PER_MOLE, UNITS
from agent.mapping.units import _from_table, _quantity, _registry, conversion
from tests.mapping.ucum_table_gen import table

ROOT = Path(__file__).resolve().parents[2]


def _pint(source: str, target: str, molar_mass: float | None) -> tuple[float, float] | None:
    """(scale, offset) by pint alone, as units.conversion worked before the table."""
    import pint

    registry = _registry()
    src, dst = _quantity(source), _quantity(target)

    def at(x: float) -> float:
        value = registry.Quantity(x * src.magnitude, src.units)
        if molar_mass is not None and value.dimensionality != dst.dimensionality:
            value = value / registry.Quantity(molar_mass, "g/mol")
            if value.dimensionality != dst.dimensionality:
                value = value * registry.Quantity(molar_mass, "g/mol") ** 2
        return float(value.to(dst.units).magnitude / dst.magnitude)

    try:
        zero = at(0.0)
        return at(1.0) - zero, zero
    except (pint.DimensionalityError, pint.errors.OffsetUnitCalculusError):
        return None


def test_the_table_is_generated_from_pint() -> None:
    assert table() == (UNITS, GRAM_PER_MOLE)


@pytest.mark.parametrize("molar_mass", [None, 113.12])
def test_every_pair_converts_as_pint_converts(molar_mass: float | None) -> None:
    checked = 0
    for source, target in itertools.permutations(UNITS, 2):
        expected = _pint(source, target, molar_mass)
        got = _from_table(source, target, molar_mass)
        if expected is None:
            assert got is None, (source, target)
            continue
        assert got is not None, (source, target)
        scale, offset = expected
        assert math.isclose(got.scale, scale, rel_tol=1e-12), (source, target)
        assert math.isclose(got.offset, offset, rel_tol=1e-12, abs_tol=1e-9), (source, target)
        checked += 1
    assert checked > 400


def test_labels_and_identity() -> None:
    assert conversion("mg/dL", "umol/L", 113.12).label == (
        "mg/dL -> umol/L (molar mass 113.12 g/mol)"
    )
    assert conversion("[degF]", "Cel").label == "[degF] -> Cel"
    assert conversion("Cel", "Cel").label is None


def test_the_demo_and_local_site_mappings_never_import_pint() -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from agent.bundle.manifest import BundleManifest\n"
        "from agent.mapping import load_mapping\n"
        "from agent.records import parse_records\n"
        "from agent.limits import Limits\n"
        "from bench.inputs import AS_OF, demo_bundle\n"
        "from tests.mapping.mapping_builders import manifest_document\n"
        "manifest = BundleManifest.model_validate(manifest_document())\n"
        "load_mapping(Path('config/mappings/local-site.yaml'), manifest)\n"
        "mapping = load_mapping(Path('config/mappings/demo-site.yaml'), manifest)\n"
        "record = parse_records(demo_bundle(), 'fhir_json', limits=Limits())[0]\n"
        "mapping.extract(record, AS_OF)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pint', 'ucumvert'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
