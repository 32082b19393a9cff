"""Inline SVG charts for the HTML report: plain markup, no script, no external asset, so
the page opens on a locked-down workstation and prints as it shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 380  # px of the whole chart
HEIGHT = 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 28, 48  # px of margin around the plot area
BLUE = "#1f5fa8"
ORANGE = "#c9541a"
GREY = "#888888"
_SHARE_LIMITS = (0.1, 0.25, 0.5, 1.0)  # y axis tops for shares: ticks at fifths stay round


@dataclass(frozen=True)
class Series:
    """A line (and optionally its points) to draw, with its legend text."""

    label: str
    points: Sequence[Sequence[float]]
    colour: str
    markers: bool = False
    dashed: bool = False


def _x(value: float, top: float) -> float:
    return _LEFT + (WIDTH - _LEFT - _RIGHT) * value / top


def _y(value: float, top: float) -> float:
    return HEIGHT - _BOTTOM - (HEIGHT - _TOP - _BOTTOM) * value / top


def _frame(title: str, x_label: str, y_label: str, x_top: float, y_top: float) -> list[str]:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    for step in range(6):
        fraction = step / 5
        x, y = _x(fraction * x_top, x_top), _y(fraction * y_top, y_top)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" stroke="#e4e4e4"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_tick(fraction * y_top)}</text>"
        )
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle">'
            f"{_tick(fraction * x_top)}</text>"
        )
    parts.append(
        f'<rect x="{_LEFT}" y="{_TOP}" width="{WIDTH - _LEFT - _RIGHT}" '
        f'height="{HEIGHT - _TOP - _BOTTOM}" fill="none" stroke="#555"/>'
    )
    parts.append(
        f'<text x="{(_LEFT + WIDTH - _RIGHT) / 2}" y="{HEIGHT - 12}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    middle = (_TOP + HEIGHT - _BOTTOM) / 2
    parts.append(
        f'<text x="14" y="{middle}" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle})">{escape(y_label)}</text>'
    )
    return parts


def _tick(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"


def _legend(series: Sequence[Series]) -> list[str]:
    parts = []
    for index, item in enumerate(series):
        y = _TOP + 14 + 16 * index
        dash = ' stroke-dasharray="5 4"' if item.dashed else ""
        parts.append(
            f'<line x1="{WIDTH - _RIGHT - 150}" y1="{y - 4}" x2="{WIDTH - _RIGHT - 130}" '
            f'y2="{y - 4}" stroke="{item.colour}" stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{WIDTH - _RIGHT - 125}" y="{y}">{escape(item.label)}</text>')
    return parts


def line_chart(title: str, x_label: str, y_label: str, series: Sequence[Series]) -> str:
    """Lines over the unit square (ROC curves, reliability curves)."""
    parts = _frame(title, x_label, y_label, 1.0, 1.0)
    for item in series:
        path = " ".join(f"{_x(x, 1):.1f},{_y(y, 1):.1f}" for x, y in item.points)
        dash = ' stroke-dasharray="5 4"' if item.dashed else ""
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{item.colour}" stroke-width="2"{dash}/>'
        )
        if item.markers:
            parts.extend(
                f'<circle cx="{_x(x, 1):.1f}" cy="{_y(y, 1):.1f}" r="3.5" fill="{item.colour}"/>'
                for x, y in item.points
            )
    parts.extend(_legend(series))
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, x_label: str, y_label: str, series: Sequence[Series]) -> str:
    """Side-by-side bars over equal bins of [0, 1]: each series' points are
    ``(bin start, height)``; heights are shares (0 to 1)."""
    top = max((h for item in series for _, h in item.points), default=0.0)
    y_top = next(limit for limit in _SHARE_LIMITS if top <= limit)
    parts = _frame(title, x_label, y_label, 1.0, y_top)
    bins = max((len(item.points) for item in series), default=1)
    slot = (WIDTH - _LEFT - _RIGHT) / bins
    width = slot * 0.8 / max(len(series), 1)
    for offset, item in enumerate(series):
        for index, (_, height) in enumerate(item.points):
            x = _LEFT + slot * index + slot * 0.1 + width * offset
            y = _y(height, y_top)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
                f'height="{HEIGHT - _BOTTOM - y:.1f}" fill="{item.colour}" opacity="0.85"/>'
            )
    parts.extend(_legend(series))
    parts.append("</svg>")
    return "".join(parts)
