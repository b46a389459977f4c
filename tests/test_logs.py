"""The log formats: text for people, JSON one object a line with documented fields."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel, LogPublisher

from kernel_relay.logs import json_line, observer, text_line


def _events(format: str, level: str = "info") -> str:
    out = io.StringIO()
    publisher = LogPublisher(observer(out, format, level))
    log = Logger(namespace="kernel_relay.test", observer=publisher)
    log.debug("quiet")
    log.info("kernel {kernel_id} stderr: {line}", kernel_id="k-1", stream="stderr", line="boom")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("it failed")
    publisher(
        {
            "log_namespace": "log_legacy",
            "log_format": "{m}",
            "m": "RelaySite starting on 3000",
            "log_level": LogLevel.info,
            "log_time": 0.0,
        }
    )
    return out.getvalue()


def test_json_is_one_object_a_line_with_the_documented_fields() -> None:
    """Each event is a line of JSON: time, level, logger, message; kernel_id and stream; traceback."""
    lines = _events("json").splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["message"] for record in records] == ["kernel k-1 stderr: boom", "it failed"]
    assert records[0] == {
        "time": records[0]["time"],
        "level": "info",
        "logger": "kernel_relay.test",
        "message": "kernel k-1 stderr: boom",
        "kernel_id": "k-1",
        "stream": "stderr",
    }
    assert records[0]["time"].endswith("Z")
    assert records[1]["level"] == "critical" and "ZeroDivisionError" in records[1]["traceback"]


def test_text_is_a_line_an_event_with_the_traceback_indented() -> None:
    """The text format reads time level [logger] message; Twisted's port lines and debug are left out."""
    text = _events("text")
    first = text.splitlines()[0]
    assert first.endswith(" info  [kernel_relay.test] kernel k-1 stderr: boom")
    assert "    Traceback" in text or "    ZeroDivisionError" in text
    assert "starting on" not in text and "quiet" not in text
    assert "quiet" in _events("text", "debug")


def test_a_line_stays_short() -> None:
    """A JSON line carries no Twisted internals (log_format, log_source...)."""
    event = {
        "log_namespace": "x",
        "log_level": LogLevel.warn,
        "log_time": 1.0,
        "log_format": "hi",
        "log_source": object(),
        "log_logger": object(),
    }
    assert json.loads(json_line(event)).keys() == {"time", "level", "logger", "message"}
    assert text_line(event) == "1970-01-01T00:00:01.000Z warn  [x] hi\n"
