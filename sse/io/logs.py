"""Log lines as text or as one JSON object per line (`--log-format`), with the stdlib only.

Records carry their structured fields as `extra=` attributes (see `FIELDS`);
the text format ignores them, the JSON format adds those a record has.
"""

from __future__ import annotations

import json
import logging
import time

__all__ = ["FIELDS", "JsonFormatter"]

# The `extra=` names the server's records may carry: access lines and stream ends.
FIELDS = (
    "request_id",
    "method",
    "route",
    "status",
    "duration_ms",
    "bytes",
    "client_ip",
    "stream",
    "lifetime_s",
    "reason",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, and the record's fields."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (a traceback becomes its "exc" field)."""
        attrs = record.__dict__
        # An access line's text holds the raw target (ids, a query): its event
        # names the route pattern instead, as its "route" field does.
        route = attrs.get("route")
        event = (
            record.getMessage()
            if route is None
            else f"{attrs.get('method')} {route} {attrs.get('status')}"
        )
        entry: dict[str, object] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": event,
        }
        if self._worker is not None:
            entry["worker"] = self._worker
            entry["pid"] = record.process
        for name in FIELDS:
            if name in attrs:
                entry[name] = attrs[name]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        # default=str: a field of a type json cannot carry still yields a line.
        return json.dumps(entry, default=str)


def _timestamp(created: float) -> str:
    # RFC 3339 in UTC with milliseconds, the form log collectors parse without help.
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
