"""The disk alone: how long a sync takes at soapreceptor's own write rate, with no receptor running.

soapreceptor syncs every accepted message to its worker's spool file
(``fdatasync``) before it answers, so no answer comes sooner than the disk
syncs, and a slow sync holds up every answer waiting on it. On a shared
virtual disk a sync now and then takes a hundred milliseconds or more,
however little is written: that decides p99 latency at half of peak more
than any receptor code can. So the harness measures the disk alone in the
same rounds as the paced runs, writing as soapreceptor's workers did (one
file each, preallocated as the spool's segments are, the paced run's
messages a second, each message's size), and the latency target is read
beside it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: A sync slower than this holds its answers past the latency target (issue 8: p99 <= 10 ms) on its own.
SLOW_MS: Final[float] = 10.0
#: Each writer's file: written with zeros and synced first, as a spool segment is set aside ahead of its records.
FILE_BYTES: Final[int] = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Syncs:
    """What a run of timed writes-and-syncs saw."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: Syncs that took longer than SLOW_MS.
    slow: int


def summarize(seconds: Sequence[float]) -> Syncs:
    """The latencies ``seconds`` (each a write and its sync), summed up; percentiles by the nearest rank."""
    if not seconds:
        raise ValueError("no syncs to summarize")
    ordered = sorted(seconds)

    def rank(fraction: float) -> float:
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000

    return Syncs(
        count=len(ordered),
        p50_ms=rank(0.50),
        p99_ms=rank(0.99),
        max_ms=ordered[-1] * 1000,
        slow=sum(1 for value in ordered if value * 1000 > SLOW_MS),
    )


def measure(directory: Path, *, writers: int, rate: float, size: int, seconds: float) -> Syncs:
    """Time ``rate`` writes of ``size`` bytes a second, each synced, spread over ``writers`` files, for ``seconds``.

    The writes are as many as ``rate`` and ``seconds`` make (at least one a
    writer), however long they take.

    Each writer is a thread with a file of its own (the workers are
    processes, but a write and its sync let go of the interpreter lock,
    and the pacing between them is all the Python there is). A writer
    that falls behind its pace writes at once rather than skipping, as
    messages queue for a worker.
    """
    if writers < 1 or rate <= 0 or size < 1 or seconds <= 0:
        raise ValueError(f"nothing to measure: {writers} writers, {rate} a second, {size} bytes, {seconds} s")
    directory.mkdir(parents=True, exist_ok=True)
    latencies: list[list[float]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    each = max(1, round(rate * seconds / writers))  # writes by each writer
    starts: list[float] = []
    # The first turn once every writer has its file ready (writing 16 MiB of zeros takes a while).
    ready = threading.Barrier(writers, action=lambda: starts.append(time.monotonic()))

    def write(number: int) -> None:
        path, fd = directory / f"writer-{number}", -1
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.pwrite(fd, bytes(FILE_BYTES), 0)
            os.fsync(fd)
            ready.wait()
            start, record, offset, interval = starts[0], os.urandom(size), 0, writers / rate
            for turn in range(each):
                # The writers take turns, not all at once.
                pause = start + (turn + number / writers) * interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                began = time.perf_counter()
                os.pwrite(fd, record, offset)
                os.fdatasync(fd)
                latencies[number].append(time.perf_counter() - began)
                offset = (offset + size) % (FILE_BYTES - size)
        except threading.BrokenBarrierError:
            pass  # another writer failed: its error is the one to report
        except BaseException as exc:  # reported to the caller, not lost in a thread
            errors.append(exc)
            ready.abort()  # the others stop waiting for this one
        finally:
            if fd >= 0:  # a file of this writer's own: gone again
                os.close(fd)
                path.unlink(missing_ok=True)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return summarize([value for mine in latencies for value in mine])
