"""The log formatters keep only the fields code may attach (``ALLOWED_FIELDS``): a drop
folder's job id goes through, so "drop folder waits" and "scored" lines can be tied to
their job; anything else attached (a file name, a value) is dropped."""

from __future__ import annotations

import json
import logging

from agent.logs import JsonFormatter, TextFormatter


def _record() -> logging.LogRecord:
    record = logging.LogRecord(
        "agent.test", logging.INFO, __file__, 1, "drop folder waits", (), None
    )
    record.__dict__.update({"job": "01764876543210987654", "name_of_file": "Zyxwvutson.ndjson"})
    return record


def test_the_job_id_is_kept_and_unlisted_fields_are_dropped() -> None:
    entry = json.loads(JsonFormatter().format(_record()))
    assert entry["job"] == "01764876543210987654"
    assert "Zyxwvutson" not in json.dumps(entry)
    text = TextFormatter().format(_record())
    assert "job=01764876543210987654" in text and "Zyxwvutson" not in text
