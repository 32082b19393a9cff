"""A read-only status page at ``/``: plain server-rendered HTML, no scripts, no external
assets (hospital networks block CDNs), and a Content-Security-Policy that would stop any.
It shows what the monitor already knows — versions, signers, counts, latency, drift per
feature against its threshold and each feature's reference and live histograms — and no
patient data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from agent import __version__
from agent.intake.http.histograms import histograms_section
from agent.intake.http.predict import plane_of
from agent.limits import Limits
from agent.types import FeatureHistogram

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)  # inline <style> and style attributes only: no script, no fetch, nothing from elsewhere

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:20px} h2{font-size:17px;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:3px 10px;text-align:left;
border-bottom:1px solid #ddd} th{white-space:nowrap} .digest{overflow-wrap:anywhere}
.scroll{overflow-x:auto} .bar{background:#eee;width:min(200px,30vw);height:12px;
position:relative} .fill{height:12px} .ok{background:#3a7} .watch{background:#e90}
.act{background:#d33} .insufficient{background:#bbb} .mark{position:absolute;left:50%;
top:-2px;width:2px;height:16px;background:#222}
.live-chart{border:1px solid #ddd;background:#fafafa} .live-chart .auroc{fill:none;
stroke:#36c;stroke-width:2} .live-chart .reference{stroke:#888;stroke-dasharray:4 3}
.histograms{display:flex;flex-wrap:wrap;gap:1em} .feature-histogram{margin:0;
max-width:100%} .feature-histogram svg{max-width:100%;height:auto}
"""


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def _drift_rows(values: dict[str, Any], act: dict[str, float], missing: bool = True) -> str:
    """One table row per feature (or output); ``missing`` adds the missing-ratio cell, which
    only features have."""
    rows = []
    for name, entry in values.items():
        value = entry.get("value")
        threshold = act.get(entry.get("statistic", ""), 0.25)
        # the bar spans twice the "act" threshold; the mark sits at the threshold
        width = 0 if value is None else min(100.0, 50.0 * value / threshold)
        state = entry.get("state", "insufficient")
        shown = "not enough records yet" if value is None else f"{value:.3f}"
        ratio = entry.get("missing_ratio")
        missing_cell = f"<td>{'' if ratio is None else f'{ratio:.1%}'}</td>" if missing else ""
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{escape(str(entry.get('statistic', '')))}</td>"
            f"<td>{shown}</td><td><div class='bar' title='{escape(state)}'>"
            f"<div class='fill {escape(state)}' style='width:{width:.0f}%'></div>"
            f"<div class='mark'></div></div></td><td class='state'>{escape(state)}</td>"
            f"{missing_cell}</tr>"
        )
    return "".join(rows)


def _number(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _candidate(candidate: Mapping[str, Any] | None) -> str:
    """The candidate version beside the active one: what it is, how it compares, and the
    two score distributions side by side (one pair of bars per bin)."""
    if not candidate:
        return ""
    c = candidate["comparison"]
    share = (
        f", {candidate['canary_share']:.0%} of patients" if candidate["mode"] == "canary" else ""
    )
    agreement = ", ".join(f"{escape(k)} {_number(v, '.1%')}" for k, v in c["agreement"].items())
    latency = c["latency_seconds"]
    skipped = ", ".join(f"{escape(k)}: {v}" for k, v in c["skipped"].items())
    edges, histograms = c["histogram_edges"], c["histograms"]
    bars = ""
    if histograms:
        top = max(max(histograms["active"]), max(histograms["candidate"]), 1)
        bars = "".join(
            f"<tr><td>{edges[i]:.3f} to {edges[i + 1]:.3f}</td>"
            f"<td><div class='bar'><div class='fill ok' style='width:{100 * a / top:.0f}%'>"
            f"</div></div></td><td><div class='bar'><div class='fill watch' "
            f"style='width:{100 * b / top:.0f}%'></div></div></td></tr>"
            for i, (a, b) in enumerate(
                zip(histograms["active"], histograms["candidate"], strict=True)
            )
        )
    return (
        "<h3>Candidate</h3><table class='candidate'>"
        f"<tr><th>candidate version</th><td class='candidate-version'>"
        f"{escape(candidate['version'])} ({escape(candidate['mode'])}{share})</td></tr>"
        f"<tr><th>staged</th><td>{escape(candidate['since'])}</td></tr>"
        f"<tr><th>bundle sha256</th><td class='digest'>{escape(candidate['digest'])}</td></tr>"
        f"<tr><th>records compared</th><td class='compared'>{c['records']}</td></tr>"
        f"<tr><th>skipped</th><td>{skipped}</td></tr>"
        f"<tr><th>score correlation</th><td>{_number(c['correlation'])}</td></tr>"
        f"<tr><th>abs difference mean / p99</th><td>{_number(c['mean_abs_difference'])} / "
        f"{_number(c['p99_abs_difference'])}</td></tr>"
        f"<tr><th>label agreement</th><td>{agreement}</td></tr>"
        f"<tr><th>score PSI</th><td>{_number(c['psi'])}</td></tr>"
        f"<tr><th>latency p99 active / candidate</th><td>{_ms(latency['active']['p99'])} / "
        f"{_ms(latency['candidate']['p99'])}</td></tr></table>"
        + (
            "<div class='scroll'><table class='distributions'><tr><th>risk score</th>"
            f"<th>active</th><th>candidate</th></tr>{bars}</table></div>"
            if bars
            else ""
        )
    )


def _live(live: Mapping[str, Any] | None) -> str:
    """Live performance on this site's outcomes: per version the latest figures and the
    AUROC over time (an inline SVG line, the publisher's AUROC dashed), so decay is seen."""
    if not live or not live.get("versions"):
        return ""
    reference = live.get("reference_auroc")
    rows, lines = [], []
    for version, points in live["versions"].items():
        last = points[-1]
        ppv = ", ".join(f"{escape(k)} {_number(v, '.2f')}" for k, v in last["ppv"].items())
        rows.append(
            f"<tr><td>{escape(version)}</td><td>{last['labelled']}</td>"
            f"<td class='live-auroc'>{_number(last['auroc'], '.3f')}</td>"
            f"<td>{_number(last['brier'], '.3f')}</td>"
            f"<td>{_number(last['calibration_slope'], '.2f')}</td><td>{ppv}</td></tr>"
        )
        aurocs = [p["auroc"] for p in points if p["auroc"] is not None]
        lines.append(_auroc_line(aurocs))
    guide = ""
    if reference is not None:
        y = _auroc_y(reference)
        guide = f"<line x1='0' x2='300' y1='{y:.1f}' y2='{y:.1f}' class='reference'/>"
    return (
        "<h3>Live performance on this site's outcomes</h3>"
        "<div class='scroll'><table class='live'><tr><th>version</th><th>labelled</th>"
        "<th>AUROC</th><th>Brier</th><th>calibration slope</th><th>PPV</th></tr>"
        + "".join(rows)
        + "</table></div>"
        f"<p>published AUROC: {_number(reference, '.3f')}</p>"
        "<svg class='live-chart' viewBox='0 0 300 100' width='300' height='100' role='img' "
        "aria-label='live AUROC over time, 0.5 at the bottom, 1 at the top'>"
        f"{guide}{''.join(lines)}</svg>"
    )


def _auroc_y(auroc: float) -> float:
    """0.5 at the bottom of the 100-high chart, 1.0 at the top."""
    return 100 - max(0.0, min(1.0, (auroc - 0.5) / 0.5)) * 100


def _auroc_line(aurocs: Sequence[float]) -> str:
    if not aurocs:
        return ""
    step = 300 / max(len(aurocs) - 1, 1)
    points = " ".join(f"{i * step:.1f},{_auroc_y(a):.1f}" for i, a in enumerate(aurocs))
    return f"<polyline points='{points}' class='auroc'/>"


def _card(card: Mapping[str, Any] | None) -> str:
    """The active version's model card, folded (a clinician opens it, nobody scrolls past
    it): every field the publisher filled in, as signed in the manifest."""
    if not card:
        return ""
    rows = []
    for field, value in card.items():
        if isinstance(value, dict):
            shown = ", ".join(f"{escape(str(k))} {v:g}" for k, v in value.items())
        elif isinstance(value, list):
            shown = "<br>".join(escape(str(item)) for item in value)
        else:
            shown = escape(str(value))
        if shown:
            rows.append(f"<tr><th>{escape(field.replace('_', ' '))}</th><td>{shown}</td></tr>")
    table = "".join(rows)
    return f"<details class='card'><summary>Model card</summary><table>{table}</table></details>"


def render(
    status: Mapping[str, Any],
    histograms: Mapping[str, Sequence[FeatureHistogram]] | None = None,
    histogram_values_min: int = Limits.histogram_values_min,
) -> str:
    """The page for a ``DataPlane.status()`` snapshot and, per served model, its
    ``DataPlane.feature_histograms``."""
    histograms = histograms or {}
    snapshot = status["models"]
    act = status["act"]
    site = str(status["site"])
    sections = []
    for name in status["configured"]:
        entry = snapshot.get(name, {})
        latency = entry.get("latency_seconds", {})
        errors = entry.get("errors", {})
        error_text = ", ".join(f"{escape(k)}: {v}" for k, v in errors.items()) or "none"
        version = escape(entry.get("version") or "not loaded")
        count = entry.get("predictions", 0)
        digest = escape(entry.get("digest") or "-")
        sections.append(
            f"<section class='model' id='model-{escape(name)}'><h2>{escape(name)}</h2>"
            "<table>"
            f"<tr><th>active version</th><td class='version'>{version}</td></tr>"
            f"<tr><th>bundle sha256</th><td class='digest'>{digest}</td></tr>"
            f"<tr><th>signer key</th><td>{escape(entry.get('keyid') or '-')}</td></tr>"
            f"<tr><th>predictions</th><td class='predictions'>{count}</td></tr>"
            f"<tr><th>errors</th><td>{error_text}</td></tr>"
            f"<tr><th>latency p50 / p95 / p99</th><td>{_ms(latency.get('p50'))} / "
            f"{_ms(latency.get('p95'))} / {_ms(latency.get('p99'))}</td></tr>"
            f"<tr><th>drift window</th><td>{entry.get('window_records', 0)} records</td></tr>"
            "</table>"
            f"{_card(status.get('cards', {}).get(name))}"
            f"{_candidate(status.get('candidates', {}).get(name))}"
            f"{_live(status.get('live', {}).get(name))}"
            "<h3>Drift of inputs</h3><div class='scroll'><table class='drift'><tr>"
            "<th>feature</th><th>statistic</th><th>value</th><th>against threshold</th>"
            "<th>state</th><th>missing</th></tr>"
            f"{_drift_rows(entry.get('features', {}), act)}</table></div>"
            f"{histograms_section(histograms.get(name, ()), histogram_values_min)}"
            "<h3>Drift of outputs</h3><div class='scroll'><table class='drift'><tr>"
            "<th>output</th><th>statistic</th><th>value</th><th>against threshold</th>"
            "<th>state</th></tr>"
            f"{_drift_rows(entry.get('outputs', {}), act, missing=False)}</table></div>"
            "</section>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>edge-agent status: {escape(site)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>edge-agent {__version__} — site {escape(site)}</h1>"
        f"<p>ready: <b id='ready'>{'yes' if status['ready'] else 'no'}</b> · "
        "metrics at <a href='/metrics'>/metrics</a> · API at <a href='/openapi.json'>"
        "/openapi.json</a></p>" + "".join(sections) + "</body></html>"
    )


async def status_page(request: Request) -> Response:
    plane = plane_of(request)
    histograms = {m.name: plane.feature_histograms(m) for m in plane.models()}
    page = render(plane.status(), histograms, plane.limits.histogram_values_min)
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP})
