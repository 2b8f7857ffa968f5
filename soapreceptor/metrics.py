"""What the receptor is doing, in Prometheus' text format (``GET /metrics``).

Under gunicorn every worker and the dispatcher is its own process, so the
counters use prometheus-client's multiprocess mode: ``gunicorn_config`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any process imports
this module, each process writes its own file there, and a scrape from any
worker adds them all up. Without that variable (a receptor in a test, a
single process) the counters live in the process, as usual.

The event counts by state, and how long the oldest pending event has waited,
are not counters at all: they are read from the journal at scrape time, so
every worker reports the same numbers. A scrape only reads: the counts are of
the events the dispatcher has taken into the journal (the messages still in
the workers' spool are not counted yet), and the oldest pending event's wait
takes the spool into account too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .journal import Journal, JournalError

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily


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
            self.dispatch_attempts,
            self.hook_duration,
        )


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
