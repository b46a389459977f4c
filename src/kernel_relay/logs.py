# -*- test-case-name: tests.test_logs -*-
"""
The relay's log formats, for people (``text``, the default) and for machines (``json``: one object a line).

A JSON line has these fields, always: ``time`` (UTC, ISO 8601 with milliseconds), ``level`` (debug, info,
warn, error, critical), ``logger`` (the module that logged it) and ``message`` (the line as the text format
shows it); and when they apply: ``kernel_id`` (the event is about that kernel), ``stream`` (a kernel's own
output: ``stdout`` or ``stderr``), ``traceback`` (an error's, as text). Nothing else, so that a line stays
short and its fields stable.

Twisted's own "<Site> starting on <port>" lines are left out (one per listening socket, so twice with
``::1``): the relay's start-up line names its URLs instead.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import IO, Any, cast

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
)
from zope.interface import implementer

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warn", "error", "critical")

_TWISTED_PORT_LINE = re.compile(r"^\S+ (starting|stopping) on \S+$|^\(\S+ Port \d+ Closed\)$")


def _time(event: LogEvent) -> str:
    moment = datetime.fromtimestamp(event.get("log_time") or 0.0, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _traceback(event: LogEvent) -> str | None:
    failure = event.get("log_failure")
    if failure is None:
        return None
    try:
        return str(failure.getTraceback()).rstrip()
    except Exception:
        return repr(failure)


def _level(event: LogEvent) -> str:
    level = event.get("log_level")
    return level.name if isinstance(level, type(LogLevel.info)) else "info"


def json_line(event: LogEvent) -> str:
    """One event as one JSON object and a newline (see the module's docstring for its fields)."""
    record: dict[str, Any] = {
        "time": _time(event),
        "level": _level(event),
        "logger": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for field in ("kernel_id", "stream"):
        value = event.get(field)
        if isinstance(value, str):
            record[field] = value
    traceback = _traceback(event)
    if traceback is not None:
        record["traceback"] = traceback
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def text_line(event: LogEvent) -> str:
    """One event as ``time level [logger] message``, an error's traceback after it."""
    namespace = str(event.get("log_namespace", "-"))
    text = formatEvent(event).replace("\n", "\n    ")
    line = f"{_time(event)} {_level(event):<5} [{namespace}] {text}\n"
    traceback = _traceback(event)
    if traceback is not None:
        line += "    " + traceback.replace("\n", "\n    ") + "\n"
    return line


@implementer(ILogFilterPredicate)
class _NoPortLines:
    """Leaves out Twisted's "<factory> starting on <port>" lines."""

    def __call__(self, event: LogEvent) -> Any:
        if event.get("log_namespace") == "log_legacy" and _TWISTED_PORT_LINE.match(
            formatEvent(event)
        ):
            return PredicateResult.no
        return PredicateResult.maybe


def observer(file: IO[str], format: str = "text", level: str = "info") -> ILogObserver:
    """An observer writing to ``file`` in ``format``, events under ``level`` left out."""
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    writer = FileLogObserver(file, json_line if format == "json" else text_line)
    return FilteringLogObserver(writer, [levels, cast(ILogFilterPredicate, _NoPortLines())])


__all__ = ["FORMATS", "LEVELS", "json_line", "observer", "text_line"]
