"""The log formats (soapreceptor.logs): the text line must be logging.Formatter's, to the character."""

from __future__ import annotations

import logging
import sys
import time

import pytest

from soapreceptor.logs import LINE_FORMAT, LineFormatter


def record(message: str, *args: object, created: float, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("soapreceptor.access", logging.INFO, __file__, 1, message, args or None, None)
    made.created = created
    made.msecs = int((created - int(created)) * 1000) + 0.0
    made.__dict__.update(extra)
    return made


# Around second boundaries, where the cached time of day must change, and far apart.
TIMES = [1_764_583_199.0, 1_764_583_199.999, 1_764_583_200.0, 1_764_583_200.5, 1_000_000_000.25, 1_764_583_200.001]


@pytest.mark.parametrize("created", TIMES)
def test_a_line_is_what_logging_formatter_writes(created: float) -> None:
    fast, generic = LineFormatter(), logging.Formatter(LINE_FORMAT)
    for message, args in [("request_id=abc status=200 duration_ms=1.5", ()), ("%s of %d%%", ("a", 5))]:
        fast_record, generic_record = record(message, *args, created=created), record(message, *args, created=created)
        assert fast.format(fast_record) == generic.format(generic_record)
        # What other handlers of the same record may read after it was formatted.
        assert (fast_record.message, fast_record.asctime) == (generic_record.message, generic_record.asctime)


def test_the_time_of_day_follows_the_records_not_the_first_one() -> None:
    fast, generic = LineFormatter(), logging.Formatter(LINE_FORMAT)
    for created in [*TIMES, *reversed(TIMES)]:
        assert fast.format(record("x", created=created)) == generic.format(record("x", created=created))


def test_the_formatters_converter_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, generic = LineFormatter(), logging.Formatter(LINE_FORMAT)
    for formatter in (fast, generic):
        monkeypatch.setattr(formatter, "converter", time.gmtime)
    assert fast.format(record("x", created=TIMES[0])) == generic.format(record("x", created=TIMES[0]))
    assert fast.formatTime(record("x", created=TIMES[0]), "%H") == generic.formatTime(
        record("x", created=TIMES[0]), "%H"
    )


def test_exceptions_and_stacks_read_as_logging_writes_them() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        info = sys.exc_info()
    fast, generic = LineFormatter(), logging.Formatter(LINE_FORMAT)
    extras: list[dict[str, object]] = [{"exc_info": info}, {"stack_info": "Stack (most recent call last):\n  here"}]
    for extra in extras:
        line = fast.format(record("failed", created=TIMES[1], **extra))
        assert line == generic.format(record("failed", created=TIMES[1], **extra))
        assert "ValueError: boom" in line or "  here" in line


def test_a_record_without_a_process_id_fails_as_it_does_in_logging() -> None:
    # logging.logProcesses off: %(process)d cannot format None, and the line must not pretend it can.
    for formatter in (LineFormatter(), logging.Formatter(LINE_FORMAT)):
        with pytest.raises(TypeError):
            formatter.format(record("x", created=TIMES[0], process=None))
