"""Each input feature's reference and live histograms, drawn one over the other as inline
SVG, for the status page: drift seen, not only read.

Self-contained on purpose: no script, no external asset, presentation attributes rather
than stylesheet rules, so a figure draws offline, under the page's Content-Security-Policy,
and copied out of the page. Bars are proportions of their own histogram (reference grey,
live blue), so a window of 40 values compares with a training set of thousands. Numeric
bins are the reference's quantile bins drawn at equal width, which is why the reference is
nearly flat and a shift shows as a tilt of the live bars. Only bin counts are drawn; a live
histogram of fewer than ``min_values`` values is not drawn at all (a handful of values in
a bin could single a patient out).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from itertools import pairwise

from agent.types import FeatureHistogram

WIDTH = 300  # SVG user units
PLOT = 80  # height of the bars' area
AXIS = 14  # height of the bin labels below it
REFERENCE_FILL = "#bbbbbb"
LIVE_FILL = "#3366cc"


def shares(counts: Sequence[float]) -> list[float]:
    """``counts`` as proportions of their sum (all zero when the sum is not positive)."""
    total = sum(counts)
    if total <= 0:
        return [0.0] * len(counts)
    return [c / total for c in counts]


def bin_labels(histogram: FeatureHistogram) -> list[str]:
    """What each bin holds: a value range (a value on an edge counts in the bin above) or
    a category, the last bin of a categorical feature being the unplaced ones."""
    if histogram.levels:
        return [*histogram.levels, "unseen"]
    edges = [f"{e:g}" for e in histogram.edges]
    if not edges:
        return ["all values"]
    middle = [f"{low} to {high}" for low, high in pairwise(edges)]
    return [f"below {edges[0]}", *middle, f"{edges[-1]} and above"]


def histogram_svg(histogram: FeatureHistogram, min_values: int) -> str:
    """One feature's figure: the two histograms over the same bins, the bin edges (or
    categories) below, a tooltip per bin with both shares."""
    reference = shares(histogram.reference)
    drawn = sum(histogram.live) >= min_values
    live = shares(histogram.live) if drawn else [0.0] * len(reference)
    top = max([*reference, *live, 1e-12])
    slot = WIDTH / max(len(reference), 1)
    labels = bin_labels(histogram)
    bins = []
    for i, (ref, now, label) in enumerate(zip(reference, live, labels, strict=True)):
        x = i * slot
        tip = f"{label}: reference {ref:.1%}" + (f", live {now:.1%}" if drawn else "")
        bars = _bar("reference", x + 1, slot - 2, ref, top, REFERENCE_FILL)
        if drawn:
            bars += _bar("live", x + slot / 4, slot / 2, now, top, LIVE_FILL)
        bins.append(f"<g><title>{escape(tip)}</title>{bars}</g>")
    return (
        f"<svg class='histogram' viewBox='0 0 {WIDTH} {PLOT + AXIS}' width='{WIDTH}' "
        f"height='{PLOT + AXIS}' role='img' aria-label='{escape(_description(histogram))}'>"
        f"<line x1='0' x2='{WIDTH}' y1='{PLOT}' y2='{PLOT}' stroke='#444' stroke-width='1'/>"
        + "".join(bins)
        + _axis(histogram, labels, slot)
        + "</svg>"
    )


def _bar(kind: str, x: float, width: float, share: float, top: float, fill: str) -> str:
    height = share / top * (PLOT - 2)
    return (
        f"<rect class='{kind}' data-share='{share:.9f}' x='{x:.1f}' y='{PLOT - height:.1f}' "
        f"width='{max(width, 0.5):.1f}' height='{height:.1f}' fill='{fill}'/>"
    )


def _axis(histogram: FeatureHistogram, labels: Sequence[str], slot: float) -> str:
    """Edges under the boundaries between bins; categories under their bins."""
    y = PLOT + AXIS - 3
    if histogram.levels:
        placed = [((i + 0.5) * slot, label) for i, label in enumerate(labels)]
    else:
        placed = [((i + 1) * slot, f"{edge:g}") for i, edge in enumerate(histogram.edges)]
    return "".join(
        f"<text x='{x:.1f}' y='{y}' font-size='8' text-anchor='middle' fill='#444'>"
        f"{escape(text)}</text>"
        for x, text in placed
    )


def _description(histogram: FeatureHistogram) -> str:
    return f"{histogram.feature}: reference (grey) and live (blue) shares per bin"


def figure(histogram: FeatureHistogram, min_values: int) -> str:
    """The figure with its caption: name, unit, drift figure and state, live count."""
    count = sum(histogram.live)
    unit = f" ({escape(histogram.unit)})" if histogram.unit else ""
    drift = (
        "not enough values yet"
        if histogram.drift is None
        else f"{escape(histogram.statistic.upper())} {histogram.drift:.3f}"
    )
    if count == 0:
        live = "no live values yet"
    elif count < min_values:
        live = f"{count} live values: too few to draw (under {min_values})"
    else:
        live = f"{count} live values"
    return (
        f"<figure class='feature-histogram' data-feature='{escape(histogram.feature)}'>"
        f"{histogram_svg(histogram, min_values)}<figcaption><b>"
        f"{escape(histogram.feature)}</b>{unit} · <span class='drift-figure'>{drift}</span> "
        f"<span class='state'>{escape(histogram.state)}</span> · "
        f"<span class='live-count' data-count='{count}'>{live}</span></figcaption></figure>"
    )


def _swatch(fill: str) -> str:
    square = f"<rect width='10' height='10' fill='{fill}'/>"
    return f"<svg width='10' height='10' aria-hidden='true'>{square}</svg>"


def histograms_section(histograms: Sequence[FeatureHistogram], min_values: int) -> str:
    """Every input feature's figure, under a legend that says how to read them."""
    if not histograms:
        return ""
    return (
        "<h3>Inputs: reference and live</h3><p class='legend'>"
        f"{_swatch(REFERENCE_FILL)} training reference, {_swatch(LIVE_FILL)} live drift "
        "window, each as shares of its "
        "own values (missing ones apart). Numeric bins are the reference's quantiles drawn "
        "at equal width: the reference is nearly flat, a shift tilts the live bars. A live "
        f"histogram of fewer than {min_values} values is not drawn.</p>"
        "<div class='histograms'>" + "".join(figure(h, min_values) for h in histograms) + "</div>"
    )
