"""What happens to a parsed notification: judged by the policy, then stored in the journal.

No HTTP and no spyne here: the service calls :meth:`Receptor.handle` with a
:class:`Notification` and how it arrived, and gets back normally (accepted
and durably stored) or a :class:`~soapreceptor.errors.NotifyFault` (refused).
The user's hook never runs here: the dispatcher hands stored events on, so
a slow or failing hook cannot slow or fail the answer to MTurk.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import errors, metrics
from .group_commit import GroupCommit
from .journal import Arrival, Journal, JournalError
from .model import Notification
from .policy import Policy

logger = logging.getLogger("soapreceptor")

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The receptor's clock: an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Receptor:
    """Accepts or refuses notifications, and stores the accepted ones before the answer goes out."""

    policy: Policy
    journal: Journal
    clock: Clock = utc_now
    # Concurrent requests of one worker share commits (threaded workers).
    commits: GroupCommit = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "commits", GroupCommit(self.journal))

    def handle(self, notification: Notification, arrival: Arrival) -> None:
        """Judge ``notification`` and store it durably in the journal's spool, or raise the fault that refuses it.

        The dispatcher then queues its events, judging each for duplicates.
        """
        now = self.clock()
        self.policy.check(notification, now)
        started = time.perf_counter()
        try:
            self.commits.append(notification, arrival, now.timestamp())
        except JournalError as exc:
            logger.error("request %s: not accepted, the journal failed: %s", arrival.request_id, exc)
            raise errors.JournalUnavailable(
                "the receptor could not store the notification, so it was not accepted; "
                f"its log has the details under request id {arrival.request_id}"
            ) from None
        metrics.get().journal_commit.observe(time.perf_counter() - started)
