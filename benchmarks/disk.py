"""The disk alone: the latency a message would have if storing it durably were all a receptor did.

soapreceptor syncs every accepted message to its worker's spool file
(``fdatasync``) before it answers, so no answer comes sooner than the disk
syncs, and a slow sync holds up every answer waiting on it. On a shared
virtual disk a sync now and then takes a hundred milliseconds or more,
however little is written: that decides p99 latency at half of peak more
than any receptor code can. So the harness measures the disk alone in the
same rounds as the paced runs, writing as soapreceptor's workers did: one
file each, preallocated as the spool's segments are, messages of the run's
size arriving at the run's rate, and the messages that arrive while a sync
runs written together and synced once after it, as the group commit does.
A message's latency runs from when it arrives to the end of the sync that
holds it, so the messages held up by a slow sync count, not only the sync.
The latency target is read beside it.
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

from soapreceptor import spool

#: A sync slower than this holds its answers past the latency target (issue 8: p99 <= 10 ms) on its own.
SLOW_MS: Final[float] = 10.0
#: Each writer's file: written with zeros and synced first, as a spool segment is set aside ahead of its records.
FILE_BYTES: Final[int] = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Syncs:
    """What a run of timed writes-and-syncs saw: the messages' latencies."""

    #: Messages written.
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: Messages that waited longer than SLOW_MS.
    slow: int
    #: Syncs made (fewer than messages where some shared one).
    syncs: int


def summarize(seconds: Sequence[float], syncs: int) -> Syncs:
    """The messages' latencies ``seconds`` (stored by ``syncs`` syncs), summed up; percentiles by the nearest rank."""
    if not seconds:
        raise ValueError("no latencies to summarize")
    ordered = sorted(seconds)

    def rank(fraction: float) -> float:
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000

    return Syncs(
        count=len(ordered),
        p50_ms=rank(0.50),
        p99_ms=rank(0.99),
        max_ms=ordered[-1] * 1000,
        slow=sum(1 for value in ordered if value * 1000 > SLOW_MS),
        syncs=syncs,
    )


def _store(fd: int, arrivals: Sequence[float], size: int) -> tuple[list[float], int]:
    """Write and sync a message of ``size`` bytes arriving at each of ``arrivals``: each one's latency, and the syncs.

    The messages that arrive while a sync runs go in the next write and sync together.
    """
    latencies: list[float] = []
    record, offset, first, syncs = os.urandom(size), 0, 0, 0
    while first < len(arrivals):
        pause = arrivals[first] - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        now, last = time.monotonic(), first + 1
        while last < len(arrivals) and arrivals[last] <= now:
            last += 1  # arrived meanwhile: in this write and sync too
        batch = record * (last - first)
        if offset + len(batch) > FILE_BYTES:
            offset = 0  # back to the start of the file, still allocated
        os.pwrite(fd, batch, offset)
        os.fdatasync(fd)
        done = time.monotonic()
        latencies += [done - arrived for arrived in arrivals[first:last]]
        syncs += 1
        offset, first = offset + len(batch), last
    return latencies, syncs


def measure(directory: Path, *, writers: int, rate: float, size: int, seconds: float) -> Syncs:
    """Store ``rate`` messages of ``size`` bytes a second, each synced, over ``writers`` files, for ``seconds``.

    The messages are as many as ``rate`` and ``seconds`` make (at least one
    a writer), however long storing them takes. Each writer is a thread
    with a file of its own (the workers are processes, but a write and its
    sync let go of the interpreter lock, and the pacing between them is all
    the Python there is); its messages arrive evenly, the writers taking
    turns. A writer writes the messages that have arrived, all in one write,
    syncs, and then waits for the next.
    """
    if writers < 1 or rate <= 0 or size < 1 or seconds <= 0:
        raise ValueError(f"nothing to measure: {writers} writers, {rate} a second, {size} bytes, {seconds} s")
    directory.mkdir(parents=True, exist_ok=True)
    latencies: list[list[float]] = [[] for _ in range(writers)]
    synced = [0] * writers
    errors: list[BaseException] = []
    each = max(1, round(rate * seconds / writers))  # messages by each writer
    starts: list[float] = []
    # The first turn once every writer has its file ready (writing 16 MiB of zeros takes a while).
    ready = threading.Barrier(writers, action=lambda: starts.append(time.monotonic()))

    def write(number: int) -> None:
        path, fd = directory / f"writer-{number}", -1
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            spool.write_zeros(fd, 0, FILE_BYTES)  # as the spool does: see there why a page at a time
            os.fsync(fd)
            ready.wait()
            # When this writer's messages arrive; the writers take turns, not all at once.
            arrivals = [starts[0] + (turn + number / writers) * writers / rate for turn in range(each)]
            latencies[number], synced[number] = _store(fd, arrivals, size)
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
    return summarize([value for mine in latencies for value in mine], sum(synced))
