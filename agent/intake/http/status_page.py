"""A read-only status page at ``/``: plain server-rendered HTML, no scripts, no external
assets (hospital networks block CDNs). It shows what the monitor already knows — versions,
signers, counts, latency, drift per feature against its threshold — and no patient data."""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from agent import __version__
from agent.pipeline import ScoringPipeline

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:20px} h2{font-size:17px;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:3px 10px;text-align:left;
border-bottom:1px solid #ddd} th{white-space:nowrap} .digest{overflow-wrap:anywhere}
.scroll{overflow-x:auto} .bar{background:#eee;width:min(200px,30vw);height:12px;
position:relative} .fill{height:12px} .ok{background:#3a7} .watch{background:#e90}
.act{background:#d33} .insufficient{background:#bbb} .mark{position:absolute;left:50%;
top:-2px;width:2px;height:16px;background:#222}
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


def render(pipeline: ScoringPipeline) -> str:
    snapshot = pipeline.monitor.snapshot()["models"]
    monitor = pipeline.config.monitor
    act = {"psi": monitor.psi_act, "js": monitor.js_act}
    sections = []
    for model_config in pipeline.config.models:
        name = model_config.name
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
            "<h3>Drift of inputs</h3><div class='scroll'><table class='drift'><tr>"
            "<th>feature</th><th>statistic</th><th>value</th><th>against threshold</th>"
            "<th>state</th><th>missing</th></tr>"
            f"{_drift_rows(entry.get('features', {}), act)}</table></div>"
            "<h3>Drift of outputs</h3><div class='scroll'><table class='drift'><tr>"
            "<th>output</th><th>statistic</th><th>value</th><th>against threshold</th>"
            "<th>state</th></tr>"
            f"{_drift_rows(entry.get('outputs', {}), act, missing=False)}</table></div>"
            "</section>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>edge-agent status: {escape(pipeline.config.site)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>edge-agent {__version__} — site {escape(pipeline.config.site)}</h1>"
        f"<p>ready: <b id='ready'>{'yes' if pipeline.ready else 'no'}</b> · "
        "metrics at <a href='/metrics'>/metrics</a> · API at <a href='/openapi.json'>"
        "/openapi.json</a></p>" + "".join(sections) + "</body></html>"
    )


async def status_page(request: Request) -> Response:
    pipeline: ScoringPipeline = request.app.state.pipeline
    return HTMLResponse(render(pipeline))
