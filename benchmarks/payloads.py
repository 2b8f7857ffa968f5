"""The benchmark's messages: signed, Amazon-shaped ``Notify`` calls, every one different.

Each message has the exact shape of Amazon's documented example (built by
:func:`soapreceptor.fixtures.amazon_envelope`, the same code the recorded
fixtures come from), a current ``Timestamp`` signed with the benchmark key,
and events whose ids are unique across the whole benchmark run: a receptor
that detects duplicates (soapreceptor does) must store every event as new
and hand it on, as it would with real traffic, not take a cheaper path for
replays.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

from soapreceptor import fixtures, signature, versions

#: The key every receptor of the benchmark is started with.
SECRET = "benchmark-secret-not-for-production"

#: MTurk's event types that carry an assignment, cycled through the events of a message.
_TYPES = ("AssignmentAccepted", "AssignmentSubmitted", "AssignmentReturned", "AssignmentAbandoned")


def timestamp(now: dt.datetime | None = None) -> str:
    """MTurk's form of a timestamp (second precision, ``Z``)."""
    now = dt.datetime.now(dt.UTC) if now is None else now
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def message(events: int, serial: int, *, stamp: str, secret: str = SECRET) -> bytes:
    """Message number ``serial`` with ``events`` events, signed for ``stamp``."""
    return fixtures.amazon_envelope(
        versions.DEFAULT_VERSION,
        signature=signature.sign(secret, stamp),
        timestamp=stamp,
        events=[_event(serial, n) for n in range(events)],
    )


def _event(serial: int, n: int) -> dict[str, str]:
    return {
        "EventType": _TYPES[n % len(_TYPES)],
        "EventTime": f"2006-05-23T23:{(n // 60) % 60:02d}:{n % 60:02d}Z",
        "HITTypeId": "KDSFO4455LKDAF3HITTYPE0000001",
        "HITId": f"BENCHHIT{serial:012d}",
        "AssignmentId": f"BENCHASSIGNMENT{serial:012d}N{n:04d}",
    }


def messages(events: int, count: int, *, first: int = 0, secret: str = SECRET) -> Iterator[bytes]:
    """``count`` different messages, serials ``first`` onwards, all stamped now."""
    stamp = timestamp()
    for serial in itertools.islice(itertools.count(first), count):
        yield message(events, serial, stamp=stamp, secret=secret)
