"""What happens to a parsed notification: judged by the policy, then each event handed to the hook.

No HTTP and no spyne here: the service calls :meth:`Receptor.handle` with a
:class:`Notification`, and gets back normally (accepted) or a
:class:`~soapreceptor.errors.NotifyFault` (refused).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from . import errors
from .hooks import Hook
from .model import Notification
from .policy import Policy

logger = logging.getLogger("soapreceptor")

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The receptor's clock: an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Receptor:
    """Accepts or refuses notifications and hands accepted events to ``hook``.

    The hook runs inside the request, once per event, in message order; if it
    raises, the caller gets a ``Server.HookFailed`` fault (MTurk does not
    retry, so the failure is logged with every event that was not handled).
    """

    policy: Policy
    hook: Hook
    clock: Clock = utc_now

    def handle(self, notification: Notification, request_id: str = "-") -> None:
        """Judge ``notification`` and deliver its events, or raise the fault that refuses it."""
        self.policy.check(notification, self.clock())
        for index, event in enumerate(notification.events, start=1):
            try:
                self.hook(event)
            except Exception:
                logger.exception(
                    "request %s: the hook failed on event %d of %d (%s hit=%s assignment=%s); "
                    "events %d to %d were not handled",
                    request_id,
                    index,
                    len(notification.events),
                    event.event_type,
                    event.hit_id,
                    event.assignment_id,
                    index,
                    len(notification.events),
                )
                raise errors.HookFailed(
                    f"the receptor's hook failed on event {index} of {len(notification.events)}; "
                    f"its log has the details under request id {request_id}"
                ) from None
