"""The report on disk: ``report.json`` (the figures, for tools) and ``report.html`` (the
same figures for people), each written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.validation.report_html import render

JSON_NAME = "report.json"
HTML_NAME = "report.html"


def write_report(report: Mapping[str, Any], out: Path) -> list[Path]:
    """Write both files into ``out`` (temp file + rename); return their paths."""
    written = []
    for name, text in (
        (JSON_NAME, json.dumps(report, indent=2, allow_nan=False) + "\n"),
        (HTML_NAME, render(report)),
    ):
        target = out / name
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
