"""Log lines as JSON, for ``SOAPRECEPTOR_LOG_FORMAT=json``: one object per line, for log shippers.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``pid`` and
``message``; a request's line also carries its fields (``request_id``,
``version``, ``events``, ``outcome``, ``duration_ms``...), passed with
``extra={"fields": {...}}``; a traceback goes in ``exception``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
