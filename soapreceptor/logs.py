"""The receptor's log formats: text lines (the default), or JSON for ``SOAPRECEPTOR_LOG_FORMAT=json``.

:class:`LineFormatter` writes ``time [pid] LEVEL logger: message``, as a
:class:`logging.Formatter` with :data:`LINE_FORMAT` does, at a fraction of
its cost: the receptor logs a line for every request, and the generic
formatter was a measurable share of a request's time.

:class:`JsonFormatter` writes one object per line, for log shippers. Each
line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``pid`` and
``message``; a request's line also carries its fields (``request_id``,
``version``, ``events``, ``outcome``, ``duration_ms``...), passed with
``extra={"fields": {...}}``; a traceback goes in ``exception``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Final

#: The text line's layout, in :class:`logging.Formatter`'s terms.
LINE_FORMAT: Final[str] = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class LineFormatter(logging.Formatter):
    """Formats a record exactly as ``logging.Formatter(LINE_FORMAT)`` does, only faster.

    The time of day is formatted once a second rather than for every
    record, and the line is put together directly instead of through a
    %-format of the record's whole ``__dict__``. A record with an exception
    or a stack goes the generic way, as it is rare and its text long (and
    so does one without a process id, ``logging.logProcesses`` being off).
    """

    def __init__(self) -> None:
        super().__init__(LINE_FORMAT)
        # (second, its time of day): one attribute, so that a thread sees a pair that belongs together.
        self._last: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info or record.process is None:
            return super().format(record)
        # What logging.Formatter.format leaves on the record, for any handler that reads it after.
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return f"{record.asctime} [{record.process}] {record.levelname} {record.name}: {record.message}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        last_second, day_time = self._last
        if second != last_second:
            day_time = time.strftime(self.default_time_format, self.converter(second))
            self._last = (second, day_time)
        return self.default_msec_format % (day_time, record.msecs) if self.default_msec_format else day_time


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
