"""The status page at ``/`` of the real agent, as a browser renders it (headless Chromium).

After real traffic (records from the training reference, then some with the temperature in
degF labelled Cel), the rendered DOM must show the model, its active version, the number of
predictions and one drift row per feature with its statistic, value and state, the
temperature in state "act". A screenshot at a phone's width is also taken (the page must not
need a browser with scripts or external assets; its layout was checked by eye on these).

Debian: ``apt-get install chromium``; without it the test skips.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_process import AgentProcess, demo_root, flag_out_of_range, start_agent
from tests.integration.monitoring_records import (
    NDJSON,
    PREDICT,
    celsius_read_as_fahrenheit,
    ndjson,
    reference_rows,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)"
    ),
]

FEATURES = {
    "heart_rate", "respiratory_rate", "body_temperature", "systolic_bp", "spo2",
    "wbc", "creatinine", "age", "sex",
}  # fmt: skip
WINDOW = 100
SHIFTED = 60  # of the last WINDOW records, enough to push the temperature's PSI past "act"


class _Tables(HTMLParser):
    """Every table row as cell texts, keyed by the class of the table it is in."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.ids: dict[str, str] = {}  # element id or class -> its text (single-text elements)
        self._table = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._named: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._table = attributes.get("class") or "table"
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        self._named = attributes.get("id") or attributes.get("class") or self._named

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._named is not None and data.strip():
            self.ids.setdefault(self._named, data.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.setdefault(self._table, []).append(self._row)
            self._row = None
        self._named = None


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    def small_window(config: dict[str, Any]) -> None:
        config["monitor"] = {"window_records": WINDOW, "min_window_records": WINDOW // 2}

    config_path = demo_root(tmp_path_factory.mktemp("status"), small_window)
    flag_out_of_range(config_path, "body_temperature")  # the degF mix-up shows as drift
    process = start_agent(config_path)
    try:
        rows = reference_rows()
        shifted = [celsius_read_as_fahrenheit(r) for r in rows[WINDOW : WINDOW + SHIFTED]]
        with process.client() as client:
            for batch in (rows[:WINDOW], shifted):
                response = client.post(
                    PREDICT, content=ndjson(batch), headers={"Content-Type": NDJSON}
                )
                assert response.status_code == 200, response.text
    except BaseException:
        process.stop()  # never leave the agent running behind a failed setup
        raise
    yield process
    assert process.stop() == 0, process.log_text()


def test_rendered_page_shows_model_version_counts_and_drift(
    agent: AgentProcess, tmp_path: Path
) -> None:
    with agent.client() as client:
        models = client.get("/v1/models").json()
    dom = _chromium(tmp_path, "--dump-dom", f"{agent.base_url}/").stdout.decode()
    page = _Tables()
    page.feed(dom)

    assert "<h2>deterioration</h2>" in dom
    assert page.ids["ready"] == "yes"
    assert page.ids["version"] == models["models"][0]["version"]
    assert page.ids["predictions"] == str(WINDOW + SHIFTED)

    header, *features, _outputs_header = page.rows["drift"][: len(FEATURES) + 2]
    assert header == ["feature", "statistic", "value", "against threshold", "state", "missing"]
    by_name = {row[0]: row for row in features}
    assert set(by_name) == FEATURES
    for name, (_, statistic, value, _bar, state, missing) in by_name.items():
        assert statistic == ("js" if name == "sex" else "psi"), name
        assert float(value) >= 0 and missing.endswith("%"), name
        assert state in {"ok", "watch", "act"}, name
    assert by_name["body_temperature"][4] == "act"
    assert float(by_name["body_temperature"][2]) >= 0.25


def test_screenshot_at_phone_width(agent: AgentProcess, tmp_path: Path) -> None:
    picture = tmp_path / "status.png"
    _chromium(tmp_path, "--window-size=420,1400", f"--screenshot={picture}", f"{agent.base_url}/")
    png = picture.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (420, 1400)
