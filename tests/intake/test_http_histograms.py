"""The status page's histogram figures (agent/intake/http/histograms.py): each histogram's
bars are shares summing to 1, a live histogram from too few values is not drawn, names are
escaped, and the SVG needs nothing from outside the page."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from agent.intake.http.histograms import figure, histogram_svg, histograms_section, shares
from agent.types import FeatureHistogram

MIN = 10
SVG = "{http://www.w3.org/2000/svg}"


def _numeric(live: tuple[int, ...], name: str = "body_temperature") -> FeatureHistogram:
    return FeatureHistogram(
        feature=name,
        unit="Cel",
        edges=(36.4, 36.9, 37.5),
        levels=(),
        reference=(0.2, 0.3, 0.3, 0.2),
        live=live,
        statistic="psi",
        drift=0.4123 if sum(live) >= MIN else None,
        state="act" if sum(live) >= MIN else "insufficient",
    )


def _bars(svg: str, kind: str) -> list[ET.Element]:
    root = ET.fromstring(svg.replace("<svg ", f"<svg xmlns='{SVG[1:-1]}' ", 1))
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == kind]


def test_both_histograms_are_shares_summing_to_one() -> None:
    svg = histogram_svg(_numeric((0, 3, 5, 29)), MIN)
    for kind, expected in (
        ("reference", [0.2, 0.3, 0.3, 0.2]),
        ("live", [0, 3 / 37, 5 / 37, 29 / 37]),
    ):
        bars = _bars(svg, kind)
        assert len(bars) == 4, kind
        drawn = [float(b.get("data-share", "")) for b in bars]
        assert sum(drawn) == pytest.approx(1.0, abs=1e-8), kind
        assert drawn == pytest.approx(expected, abs=1e-8), kind
    tallest = max(_bars(svg, "live"), key=lambda b: float(b.get("height", "")))
    assert float(tallest.get("data-share", "")) == pytest.approx(29 / 37)  # the top bar


def test_reference_fractions_that_do_not_sum_to_one_are_normalised() -> None:
    assert sum(shares([0.1, 0.1, 0.2])) == pytest.approx(1.0)
    assert shares([0, 0, 0]) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("live", "caption"),
    [((0, 0, 0, 0), "no live values yet"), ((1, 2, 3, 3), "9 live values: too few to draw")],
)
def test_too_few_live_values_draw_the_reference_alone(live: tuple[int, ...], caption: str) -> None:
    html = figure(_numeric(live), MIN)
    assert caption in html
    assert "not enough values yet" in html
    svg = html[html.index("<svg") : html.index("</svg>") + 6]
    assert len(_bars(svg, "reference")) == 4
    assert _bars(svg, "live") == []
    assert ", live" not in svg  # no tooltip gives a live share either


def test_caption_names_feature_unit_drift_and_count() -> None:
    html = figure(_numeric((2, 3, 5, 29)), MIN)
    assert "<b>body_temperature</b> (Cel)" in html
    assert "PSI 0.412" in html and ">act<" in html
    assert "data-count='39'>39 live values<" in html


def test_categorical_bins_are_the_levels_then_unseen() -> None:
    sex = FeatureHistogram(
        "sex", None, (), ("female", "male"), (0.5, 0.5, 0.0), (6, 5, 1), "js", None, "insufficient"
    )
    svg = histogram_svg(sex, MIN)
    root = ET.fromstring(svg.replace("<svg ", f"<svg xmlns='{SVG[1:-1]}' ", 1))
    assert [t.text for t in root.iter(f"{SVG}text")] == ["female", "male", "unseen"]
    assert [t.text for t in root.iter(f"{SVG}title")] == [
        "female: reference 50.0%, live 50.0%",
        "male: reference 50.0%, live 41.7%",
        "unseen: reference 0.0%, live 8.3%",
    ]


def test_names_and_units_are_escaped() -> None:
    hostile = "<script>alert('x')</script>&"
    histogram = FeatureHistogram(hostile, "<b>", (1.0,), (), (0.5, 0.5), (10, 10), "psi", 0.0, "ok")
    page = histograms_section([histogram], MIN)
    assert "<script" not in page and "<b>&lt;b&gt;" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in page
    category = FeatureHistogram(
        "ward", None, (), ("<i>A</i>",), (1.0, 0.0), (10, 0), "js", 0.0, "ok"
    )
    assert "&lt;i&gt;A&lt;/i&gt;" in histogram_svg(category, MIN)


def test_self_contained() -> None:
    page = histograms_section([_numeric((2, 3, 5, 29))], MIN)
    for outside in ("<script", "href", "src=", "url(", "style="):
        assert outside not in page, outside
