"""The status page of the real agent draws, for each input feature of the served model,
its reference and live histograms: nothing live before traffic, the reference alone while
the window holds fewer than ``limits.histogram_values_min`` values, then both, with the
live count the drift window holds and the drift figure of the drift table beside them.
The page forbids scripts and outside sources (Content-Security-Policy) and carries no
patient identifier."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.integration.agent_process import AgentProcess, demo_root, start_agent
from tests.integration.monitoring_records import (
    FEATURES,
    NDJSON,
    PREDICT,
    ndjson,
    reference_rows,
)

pytestmark = pytest.mark.integration

FEW, MORE = 6, 34  # under the 10 values a live histogram needs, then past it


@dataclass
class _Figure:
    shares: dict[str, list[float]] = field(default_factory=dict)  # bar class -> data-share
    count: int = -1
    drift: str = ""


class _Page(HTMLParser):
    """Each feature's figure (bars, live count, drift text) and the drift table's values."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, _Figure] = {}
        self.drift_values: dict[str, str] = {}
        self._figure: _Figure | None = None
        self._in_drift = False
        self._row: list[str] | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure":
            self._figure = self.figures.setdefault(a["data-feature"] or "", _Figure())
        elif tag == "rect" and self._figure is not None and a.get("data-share"):
            self._figure.shares.setdefault(a["class"] or "", []).append(
                float(a["data-share"] or "")
            )
        elif tag == "span" and self._figure is not None and a.get("class") == "live-count":
            self._figure.count = int(a["data-count"] or "")
        elif tag == "span" and a.get("class") == "drift-figure":
            self._text = []
        elif tag == "table":
            self._in_drift = a.get("class") == "drift" and not self.drift_values
        elif tag == "tr" and self._in_drift:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        elif tag == "span" and self._text is not None and self._figure is not None:
            self._figure.drift = "".join(self._text)
            self._text = None
        elif tag == "td" and self._row is not None and self._text is not None:
            self._row.append("".join(self._text))
            self._text = None
        elif tag == "tr" and self._row:
            self.drift_values[self._row[0]] = self._row[2]
            self._row = None
        elif tag == "table":
            self._in_drift = False


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    def small_window(config: dict[str, Any]) -> None:
        config["monitor"] = {"window_records": 100, "min_window_records": 20}

    process = start_agent(demo_root(tmp_path_factory.mktemp("histograms"), small_window))
    yield process
    assert process.stop() == 0, process.log_text()


def _page(agent: AgentProcess) -> tuple[_Page, str]:
    with agent.client() as client:
        response = client.get("/")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script" not in policy
    page = _Page()
    page.feed(response.text)
    assert tuple(page.figures) == FEATURES
    return page, response.text


def _score(agent: AgentProcess, body: bytes) -> None:
    with agent.client() as client:
        response = client.post(PREDICT, content=body, headers={"Content-Type": NDJSON})
    assert response.status_code == 200, response.text


def test_histograms_follow_the_scored_records(agent: AgentProcess) -> None:
    complete = [r for r in reference_rows() if None not in r.values.values()]
    page, _ = _page(agent)
    for name, drawn in page.figures.items():
        assert drawn.count == 0 and "live" not in drawn.shares, name
        assert sum(drawn.shares["reference"]) == pytest.approx(1.0, abs=1e-6), name

    _score(agent, ndjson(complete[:FEW]))
    page, _ = _page(agent)
    for name, drawn in page.figures.items():
        assert drawn.count == FEW and "live" not in drawn.shares, name  # too few to draw

    body = ndjson(complete[FEW : FEW + MORE])
    _score(agent, body)
    page, html = _page(agent)
    for name, drawn in page.figures.items():
        assert drawn.count == FEW + MORE, name
        assert len(drawn.shares["live"]) == len(drawn.shares["reference"]), name
        assert sum(drawn.shares["live"]) == pytest.approx(1.0, abs=1e-6), name
        shown = drawn.drift.split()[-1]  # "PSI 0.123": the drift table's figure
        assert drawn.drift.split()[0] == ("JS" if name == "sex" else "PSI"), name
        assert shown == page.drift_values[name], name
    assert "<script" not in html
    patients = [line for line in body.decode().splitlines() if '"Patient"' in line]
    assert all(line.split('"id": "')[1][:36] not in html for line in patients)
