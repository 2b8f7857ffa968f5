"""Group commit: the messages that arrive while one commit is being synced share the next one.

Every accepted message must be on disk before its answer goes out, and an
fsync costs the same for one message as for fifty (each worker process syncs
a spool segment of its own: :mod:`soapreceptor.spool`). When a worker serves
several requests at once (gunicorn's threaded workers), the request that
finds no commit in progress leads: it writes whatever has queued up, its own
message included, in one transaction, and wakes the others with their
results. Requests that arrive meanwhile queue for the next commit, which the
first of them leads. A lone request (or a sync worker) simply commits its own
message, at no extra cost.

No answer goes out before the commit that holds its message has returned;
a failed batch is retried message by message, so that one message the
journal refuses cannot take the others in its batch down with it.

Each commit is timed: the time one runs beyond :data:`metrics.STALL_AFTER
<soapreceptor.metrics.STALL_AFTER>` is added to the
``soapreceptor_journal_stalled_seconds`` counter. A worker runs one commit
at a time, so its stalls never overlap one another: the counter, over a
while, is how long the disk held each worker's answers back (added up over
the workers), which the per-message commit histogram cannot tell. The
requests that come in during a stall wait before their commit even starts.
"""

from __future__ import annotations

import threading
import time
from _thread import LockType
from collections.abc import Callable
from dataclasses import dataclass, field

from . import metrics
from .journal import Arrival, Journal, JournalError
from .model import Notification


def _held_lock() -> LockType:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class _Pending:
    notification: Notification
    arrival: Arrival
    now: float
    #: Held from the start; released once, when the message's commit has returned or the lead is
    #: handed to it. A bare lock, not a threading.Event: an Event builds a Condition and a lock for
    #: every wait, which was a measurable share of each message's cost under load.
    ready: LockType = field(default_factory=_held_lock)
    lead: bool = False
    done: bool = False
    error: JournalError | None = None

    def wake(self) -> None:
        self.ready.release()


class GroupCommit:
    """Records notifications in ``journal``, sharing commits between concurrent callers.

    ``clock`` times the commits (seconds; monotonic).
    """

    def __init__(self, journal: Journal, clock: Callable[[], float] = time.perf_counter) -> None:
        self.journal = journal
        self.clock = clock
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False

    def append(self, notification: Notification, arrival: Arrival, now: float) -> None:
        """Store ``notification`` durably (see :meth:`Journal.append_many`): returns once its commit has."""
        pending = _Pending(notification, arrival, now)
        with self._lock:
            self._queue.append(pending)
            pending.lead = not self._leading
            self._leading = True
        if not pending.lead:
            # Released exactly once: when the commit that holds this message has returned, or
            # when the lead passes to this message, whose own commit then holds it.
            pending.ready.acquire()
        if pending.lead:
            self._commit_queued()
        if pending.error is not None:
            raise pending.error

    def _commit_queued(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        started = self.clock()
        try:
            self._commit(batch)
        except BaseException:
            # Not the journal refusing (that is handled below) but a bug or an
            # interruption: no one in the batch may wait for ever.
            for waiting in batch:
                if not waiting.done and waiting.error is None:
                    waiting.error = JournalError("the journal write was interrupted; see the log")
            raise
        finally:
            took = self.clock() - started
            # The one that led is in the batch too, and is not waiting: it was never asleep.
            for done in batch:
                if not done.lead:
                    done.wake()
            with self._lock:
                if self._queue:
                    # Hand the lead to the first message that waited: it commits the next batch.
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake()
                else:
                    self._leading = False
            if took > metrics.STALL_AFTER:
                metrics.get().journal_stalled.inc(took - metrics.STALL_AFTER)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            self.journal.append_many([(p.notification, p.arrival, p.now) for p in batch])
        except JournalError as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for one in batch:
                self._commit([one])
            return
        for done in batch:
            done.done = True
