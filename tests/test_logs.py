"""soapreceptor.logs: the text line is logging.Formatter's, to the character; the batching handler loses nothing."""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soapreceptor.logs import LINE_FORMAT, BatchingStreamHandler, LineFormatter

from .support import DEADLINE, wait_for


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


# -- BatchingStreamHandler ------------------------------------------------------------------------


class Writes:
    """A stream that keeps each write apart: what it is given between two flushes (the handler flushes each)."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.writes.append(self.pending)
            self.pending = ""

    def lines(self) -> list[str]:
        return "".join(self.writes).splitlines()


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Writes, BatchingStreamHandler]]:
    stream = Writes()
    handler = BatchingStreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test_logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)
    handler.close()


def test_every_line_from_many_threads_is_written_once_whole_and_in_each_threads_order(
    logged: tuple[logging.Logger, Writes, BatchingStreamHandler],
) -> None:
    logger, stream, handler = logged
    threads, each = 8, 2000

    def log(thread: int) -> None:
        for n in range(each):
            logger.info("thread=%d n=%d %s", thread, n, "x" * (n % 300))

    workers = [threading.Thread(target=log, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    handler.flush()
    lines = stream.lines()
    assert len(lines) == threads * each
    for thread in range(threads):
        mine = [line.split()[2] for line in lines if line.startswith(f"INFO thread={thread} ")]
        assert mine == [f"n={n}" for n in range(each)]
    assert all(line.split()[3:] in ([], ["x" * (int(line.split()[2][2:]) % 300)]) for line in lines)
    # Batched: far fewer writes than lines, and each whole lines that a pipe takes in one piece.
    assert len(stream.writes) < len(lines) / 10
    for text in stream.writes:
        assert text.endswith("\n")
        assert len(text.encode()) <= select.PIPE_BUF


def test_a_line_longer_than_a_pipe_takes_is_written_whole_on_its_own(
    logged: tuple[logging.Logger, Writes, BatchingStreamHandler],
) -> None:
    logger, stream, handler = logged
    logger.info("short")
    logger.info("é" * select.PIPE_BUF)  # twice PIPE_BUF in UTF-8
    logger.info("after")
    handler.flush()
    assert stream.writes == ["INFO short\n", f"INFO {'é' * select.PIPE_BUF}\n", "INFO after\n"]


def test_a_warning_is_written_at_once_with_the_lines_before_it(
    logged: tuple[logging.Logger, Writes, BatchingStreamHandler],
) -> None:
    logger, stream, handler = logged
    handler.delay = 3600.0  # only the warning may write
    logger.info("one")
    logger.info("two")
    assert stream.writes == []
    logger.warning("three")
    assert stream.lines() == ["INFO one", "INFO two", "WARNING three"]


def test_a_full_batch_is_written_at_once(logged: tuple[logging.Logger, Writes, BatchingStreamHandler]) -> None:
    logger, stream, handler = logged
    handler.delay = 3600.0
    for n in range(handler.batch - 1):
        logger.info("n=%d", n)
    assert stream.writes == []
    logger.info("last")
    assert len(stream.lines()) == handler.batch


def test_a_lone_line_is_written_soon_without_a_flush(
    logged: tuple[logging.Logger, Writes, BatchingStreamHandler],
) -> None:
    logger, stream, _ = logged
    logger.info("alone")
    wait_for(lambda: stream.lines() == ["INFO alone"], "the pending write to write the line")
    logger.info("later")  # the thread writes again after it has written once
    wait_for(lambda: stream.lines() == ["INFO alone", "INFO later"], "the second line")


def test_lines_queued_before_a_fork_are_written_once(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w", encoding="utf-8") as file:
        handler = BatchingStreamHandler(file)
        handler.delay = 3600.0
        logger = logging.getLogger("test_logs.fork")
        logger.propagate, logger.level = False, logging.INFO
        logger.addHandler(handler)
        try:
            logger.info("before the fork")
            pid = os.fork()
            if pid == 0:  # the child: logs a line of its own, writes it, and leaves at once
                try:
                    logger.info("in the child")
                    handler.flush()
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            logger.info("in the parent")
            handler.flush()
        finally:
            logger.removeHandler(handler)
            handler.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert sorted(lines) == ["before the fork", "in the child", "in the parent"]
    assert lines[0] == "before the fork"


def test_closing_writes_what_waits_and_ends_the_handlers_thread() -> None:
    stream = Writes()
    handler = BatchingStreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.delay = 3600.0

    def emit(message: str) -> None:
        handler.handle(logging.LogRecord("test_logs.close", logging.INFO, __file__, 1, message, None, None))

    emit("first")  # starts the pending write's thread, which waits out the delay
    writer = handler._timer
    assert writer is not None
    assert writer.is_alive()
    handler.close()
    assert stream.lines() == ["first"]
    writer.join(timeout=DEADLINE)
    assert not writer.is_alive(), "closing cancels the pending write: its thread ends"
    emit("after")  # as with StreamHandler, a closed handler still writes, at once
    assert stream.lines() == ["first", "after"]
    assert handler._timer is None, "and schedules no write again"


def test_the_pending_writes_thread_runs_as_the_thread_that_logged(
    logged: tuple[logging.Logger, Writes, BatchingStreamHandler],
) -> None:
    # A gunicorn worker sets its scheduling policy and CPU after its first log lines: a thread that
    # writes later lines must take them from the thread logging then, not from one started earlier.
    logger, stream, handler = logged
    logger.info("before")
    wait_for(lambda: stream.lines() == ["INFO before"], "the first line")
    seen: list[set[int]] = []
    original = handler._write_late_lines

    def write_late_lines() -> None:
        seen.append(os.sched_getaffinity(0))
        original()

    handler._write_late_lines = write_late_lines  # type: ignore[method-assign]
    allowed = os.sched_getaffinity(0)
    one = {min(allowed)}

    def log_pinned() -> None:
        os.sched_setaffinity(0, one)  # this thread only
        logger.info("after")

    thread = threading.Thread(target=log_pinned)
    thread.start()
    thread.join()
    wait_for(lambda: stream.lines() == ["INFO before", "INFO after"], "the second line")
    assert seen == [one]
