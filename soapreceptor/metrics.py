"""What the receptor is doing, in Prometheus' text format (``GET /metrics``).

Under gunicorn every worker and the dispatcher is its own process, so the
counters use prometheus-client's multiprocess mode: ``gunicorn_config`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any process imports
prometheus-client (:func:`server_directory`), each process writes its own file
there, and a scrape from any worker adds them all up. Without that variable (a
receptor in a test, a single process) the counters live in the process, as usual.

The event counts by state, and how long the oldest pending event has waited,
are not counters at all: they are read from the journal at scrape time, so
every worker reports the same numbers. A scrape only reads: the counts are of
the events the dispatcher has taken into the journal (the messages still in
the workers' spool are not counted yet), and the oldest pending event's wait
takes the spool into account too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .journal import Journal, JournalError

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily

#: A journal write (its sync included) taking longer than this is a stall: the disk held the answers back.
#: 10 ms is the latency the receptor aims to answer in (issue 8); a healthy disk syncs in a millisecond or two.
STALL_AFTER = 0.010


class Metrics:
    """The receptor's counters and histograms."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram  # noqa: PLC0415 (see get())

        self.messages_received = Counter("soapreceptor_messages_received", "Notify calls received (POSTs past routing)")
        self.messages_accepted = Counter(
            "soapreceptor_messages_accepted", "Notify calls accepted and journaled", ["version"]
        )
        self.messages_refused = Counter(
            "soapreceptor_messages_refused", "Notify calls refused, by faultcode", ["reason"]
        )
        self.events_journaled = Counter("soapreceptor_events_journaled", "events stored for the hook")
        self.duplicates = Counter("soapreceptor_duplicate_events", "events stored as duplicates (not handed on again)")
        self.journal_commit = Histogram(
            "soapreceptor_journal_commit_seconds",
            "time to commit an accepted message to the journal (fsync included)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.journal_stalled = Counter(
            "soapreceptor_journal_stalled_seconds",
            f"time the workers' journal writes (each synced) ran beyond {STALL_AFTER * 1000:g} ms, added up over "
            "the workers: answers to MTurk waited on the disk meanwhile",
        )
        self.dispatch_attempts = Counter(
            "soapreceptor_dispatch_attempts", "hook calls by outcome: delivered, failed (will retry), dead", ["outcome"]
        )
        self.hook_duration = Histogram("soapreceptor_hook_seconds", "time the hook took per call")
        self.all: tuple[Counter | Histogram, ...] = (
            self.messages_received,
            self.messages_accepted,
            self.messages_refused,
            self.events_journaled,
            self.duplicates,
            self.journal_commit,
            self.journal_stalled,
            self.dispatch_attempts,
            self.hook_duration,
        )


#: The name of every server's directory of multiprocess files starts with this (:func:`server_directory`).
DIRECTORY_PREFIX = "soapreceptor-metrics-"
#: The file in it that its server holds locked for as long as any of the server's processes lives.
_OWNER = "owner.lock"


def server_directory(parent: str | None = None) -> tuple[str, int]:
    """A fresh directory for a server's multiprocess files in ``parent`` (the temporary directory), and its lock.

    The directory's lock is held through the returned descriptor, which the
    server's forked workers share: it is released when the last of them has
    exited, however they exit. First removes the directories of servers
    that were killed before they could remove their own (SIGKILL, the OOM
    killer), so that these do not pile up in ``/tmp`` one per crash.
    """
    parent = tempfile.gettempdir() if parent is None else parent
    remove_abandoned(parent)
    # Locked before it has its name: no other server's sweep ever sees it unlocked.
    making = tempfile.mkdtemp(prefix=f".{DIRECTORY_PREFIX}", dir=parent)
    fd = os.open(os.path.join(making, _OWNER), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    path = os.path.join(parent, os.path.basename(making)[1:])
    os.rename(making, path)
    return path, fd


def remove_abandoned(parent: str) -> list[str]:
    """Remove this user's server directories in ``parent`` that no live process holds; the paths removed.

    A directory without the owner file (made by a version before this one)
    is left alone: nothing tells whether its server still runs.
    """
    removed = []
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            if not entry.name.startswith(DIRECTORY_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
                fd = os.open(os.path.join(entry.path, _OWNER), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its server (or one of its workers) still runs
            finally:
                # A lock taken here goes with the descriptor; the directory goes next either way.
                os.close(fd)
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


_made: list[Metrics] = []
_making = threading.Lock()


def get() -> Metrics:
    """The process's metrics, made on first use.

    Not at import: prometheus-client decides once, when its value classes are
    first needed, whether it writes multiprocess files, so nothing here may
    run before ``gunicorn_config`` has set ``PROMETHEUS_MULTIPROC_DIR`` (and
    importing the package, which gunicorn does before reading that module,
    must not trigger it). Thread-safe: the request thread and a dispatcher
    thread may ask first at the same moment, and each name registers once.
    """
    if not _made:
        with _making:
            if not _made:
                _made.append(Metrics())
    return _made[0]


class JournalCollector:
    """Event counts by state and the oldest pending event's wait, read from the journal when scraped."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 (see get())

        gauge = GaugeMetricFamily(
            "soapreceptor_events", "events in the journal (not those still in the spool), by state", labels=["state"]
        )
        try:
            # Read only: a scrape never moves the spool into the journal (the
            # dispatcher's work) nor waits for the dispatcher's lock.
            for state, count in self.journal.counts(ingest=False).items():
                gauge.add_metric([state], count)
            oldest = self.journal.oldest_pending(ingest=False)
        except JournalError:
            return  # /readyz says why; a scrape should still show the counters
        yield gauge
        # 0 when nothing waits, so that one alert rule (say, over 300 for 10 minutes)
        # catches both a dispatcher that cannot keep up and a hook that keeps failing.
        yield GaugeMetricFamily(
            "soapreceptor_oldest_pending_seconds",
            "how long the oldest event not yet handed on to the hook has been waiting (0: none is)",
            value=0.0 if oldest is None else max(0.0, time.time() - oldest),
        )


def render(journal: Journal) -> tuple[str, bytes]:
    """The metrics of every process of this receptor: content type, and Prometheus' text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest  # noqa: PLC0415 (see get())
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for collector in get().all:
            registry.register(collector)
    registry.register(JournalCollector(journal))
    return CONTENT_TYPE_LATEST, generate_latest(registry)
