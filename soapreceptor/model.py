"""The values soapreceptor passes between its layers: a notification and its events.

Plain frozen dataclasses with no behaviour beyond describing themselves: the
wire layer builds them from bytes, the policy layer judges them, and the
user's hook receives :class:`Event` instances.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


class EventType(StrEnum):
    """The event types MTurk is known to have sent.

    ``Event.event_type`` is a plain string, never restricted to this list:
    unknown types are accepted and handed on so that no new type is ever lost.
    The members compare equal to their names (``EventType.PING == "Ping"``).
    """

    ASSIGNMENT_ACCEPTED = "AssignmentAccepted"
    ASSIGNMENT_ABANDONED = "AssignmentAbandoned"
    ASSIGNMENT_RETURNED = "AssignmentReturned"
    ASSIGNMENT_SUBMITTED = "AssignmentSubmitted"
    ASSIGNMENT_AUTO_APPROVED = "AssignmentAutoApproved"
    ASSIGNMENT_APPROVED = "AssignmentApproved"
    ASSIGNMENT_REJECTED = "AssignmentRejected"
    HIT_REVIEWABLE = "HITReviewable"
    HIT_EXPIRED = "HITExpired"
    HIT_CREATED = "HITCreated"
    HIT_EXTENDED = "HITExtended"
    HIT_DISPOSED = "HITDisposed"
    PING = "Ping"


@dataclass(frozen=True, slots=True)
class Event:
    """One event of an accepted notification, as the user's hook receives it.

    ``event_time`` is an aware UTC datetime, or None where MTurk sent none (a
    ``Ping`` may carry no HIT fields at all). IDs are opaque strings: never
    assume their length or alphabet.
    """

    event_type: str
    event_time: dt.datetime | None
    hit_type_id: str | None
    hit_id: str | None
    assignment_id: str | None
    version: str

    def as_json(self) -> dict[str, str | None]:
        """The event as JSON-ready values (``event_time`` in ISO 8601), keyed by field name."""
        return {
            "event_type": self.event_type,
            "event_time": self.event_time.isoformat() if self.event_time else None,
            "hit_type_id": self.hit_type_id,
            "hit_id": self.hit_id,
            "assignment_id": self.assignment_id,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Notification:
    """A parsed ``Notify`` call, before any policy has judged it.

    ``timestamp`` is the ``Timestamp`` element's text exactly as received (the
    signature covers that text, not the instant it denotes);
    ``timestamp_value`` is the instant, for the freshness check. ``signature``
    is None when the element was missing or empty. ``version`` is the version
    the message was sent under and ``version_source`` says where it was read.
    """

    version: str
    version_source: str
    timestamp: str
    timestamp_value: dt.datetime
    signature: str | None
    events: tuple[Event, ...]
