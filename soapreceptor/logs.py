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

:class:`BatchingStreamHandler` writes them to a stream as logging's
``StreamHandler`` does, but a busy process's lines a batch at a time.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import logging
import os
import select
import threading
import time
import weakref
from typing import Final, TextIO

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


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]  # (TextIO, as StreamHandler's)
    """Writes records to a stream as :class:`logging.StreamHandler` does, a busy process's lines in batches.

    The receptor logs a line for every request, from each of a worker's
    threads. A ``StreamHandler`` holds its lock while it writes each line,
    and a write lets go of the GIL: under load the other threads ran, came to
    the lock and queued behind it, and logging took about two and a half times
    as long per line as with one thread (issue 8: a tenth to a fifth of a worker's
    throughput went to the access log). Here a record is formatted without any lock and
    its line queued; the queue is written out, in order:

    - at once, with the lines before it, for a record of level WARNING or
      above (a problem is never held back);
    - once :attr:`batch` lines wait;
    - otherwise :attr:`delay` seconds after a line came to a queue with no
      write pending, by a timer thread that line's thread starts: nothing
      waits longer than that. A short-lived thread, not one for the process's
      life, as a thread takes its scheduling policy and CPUs from the thread
      that starts it: a gunicorn worker sets its own (SCHED_BATCH, its CPU)
      after logging its first lines, and a thread started before then would
      keep the old ones. At most one every :attr:`delay` seconds;
    - on :meth:`flush` and :meth:`close` (``logging.shutdown`` at exit), and in
      a process about to fork (its child would write the lines again).

    Each write is whole lines of at most ``PIPE_BUF`` bytes, and a pipe takes
    such a write in one piece: the lines of workers that share a pipe (a
    container's log, journald) never run into each other, as with one write
    a line. Lines are lost as with any buffer if the process is killed
    outright (SIGKILL), which ``StreamHandler`` writing each line at once
    would not lose: at most :attr:`delay` seconds' or :attr:`batch` lines.
    """

    #: Lines that make a batch: written at once.
    batch: int = 32
    #: Longest a line waits to be written, in seconds.
    delay: float = 0.1

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        # A deque's append and popleft are atomic: the threads that log need no lock to queue.
        self._lines: collections.deque[str] = collections.deque()
        self._timer: threading.Timer | None = None  # the pending write of late lines, if any
        self._closed = False
        _HANDLERS.add(self)

    def handle(self, record: logging.LogRecord) -> logging.LogRecord | bool:  # type: ignore[override]
        """Filter and emit ``record`` as :meth:`logging.Handler.handle` does, but without the handler's lock."""
        kept = self.filter(record)
        if isinstance(kept, logging.LogRecord):
            record = kept  # Python 3.12+: a filter may return a record to use instead
        if kept:
            self.emit(record)
        return kept

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record``'s line, and write the queue if it is due."""
        try:
            self._lines.append(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING or len(self._lines) >= self.batch or self._closed:
                self.flush()
            elif self._timer is None:
                self._schedule_write()
        except RecursionError:  # as logging.StreamHandler: do not hide a recursion
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Write every queued line, in order: whole lines, at most ``PIPE_BUF`` bytes a write, each flushed."""
        with self.lock:  # type: ignore[union-attr]  # (a handler's lock, None only before createLock)
            chunk: list[str] = []
            size = 0
            while self._lines:
                line = self._lines.popleft()
                length = len(line) if line.isascii() else len(line.encode("utf-8", "replace"))
                if chunk and size + length > select.PIPE_BUF:
                    self._write("".join(chunk))
                    chunk, size = [], 0
                chunk.append(line)
                size += length
            if chunk:
                self._write("".join(chunk))

    def close(self) -> None:
        """Write every queued line and cancel the pending write; a record logged after this is written at once."""
        with self.lock:  # type: ignore[union-attr]
            self.flush()
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        super().close()

    def _write(self, text: str) -> None:
        # Flushed at once, chunk by chunk: each is one write of its own on the stream's file.
        self.stream.write(text)
        if hasattr(self.stream, "flush"):
            self.stream.flush()

    def _schedule_write(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._timer is None and not self._closed:
                timer = threading.Timer(self.delay, self._write_late_lines)
                timer.name, timer.daemon = "log-writer", True
                self._timer = timer
                timer.start()

    def _write_late_lines(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            # Reset before writing: a line queued from here on schedules the next write (see emit).
            self._timer = None
            # A stream that fails here has nowhere to say so (the next record's emit reports it).
            # The lines of the write that failed are lost, as StreamHandler loses a line it
            # cannot write; the rest stay queued for the next try.
            with contextlib.suppress(Exception):
                self.flush()

    def _forget_parents_lines(self) -> None:
        # In a forked child: what the parent queued after its last write is the parent's to write,
        # and its pending write's thread is not here (threads do not survive a fork).
        self._lines.clear()
        self._timer = None


_HANDLERS: weakref.WeakSet[BatchingStreamHandler] = weakref.WeakSet()


def _before_fork() -> None:
    for handler in list(_HANDLERS):
        with contextlib.suppress(Exception):  # a broken stream must not stop the fork (emit reports it)
            handler.flush()


def _after_fork_in_child() -> None:
    for handler in list(_HANDLERS):
        handler._forget_parents_lines()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
