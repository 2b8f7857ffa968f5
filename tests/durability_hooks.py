"""Hooks with special behaviour for the durability tests; each one that succeeds records like ``tests.recording_hook``.

They run inside the dispatcher process (the gunicorn master's child, or
``soapreceptor dispatch``), so they take their parameters from environment
variables the test passes to the server:

``SOAPRECEPTOR_TEST_CALLS``     a directory: :func:`flaky` counts every call per event there
``SOAPRECEPTOR_TEST_FAILURES``  how many first attempts of a ``FLAKY...`` event :func:`flaky` fails (2)
``SOAPRECEPTOR_TEST_RELEASE``   a file: :func:`wait_for_release` blocks until it exists
``SOAPRECEPTOR_TEST_ENTERED``   a directory: :func:`wait_for_release` marks each event it starts blocking on
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from soapreceptor import Event
from tests.recording_hook import record

FLAKY_PREFIX = "FLAKY"
# How long wait_for_release waits for its release file before giving up (the test's
# SOAPRECEPTOR_HOOK_TIMEOUT must be longer, so that this deadline is the one that acts).
RELEASE_DEADLINE = 120.0


class FlakyHookError(Exception):
    """Raised by :func:`flaky` on the attempts it is told to fail."""


class DownstreamRefused(Exception):
    """Raised by :func:`refuse` on every attempt."""


def event_key(event: Event) -> str:
    """A file name that identifies ``event`` (IDs are opaque strings, so they are hashed)."""
    ident = f"{event.event_type}|{event.hit_id}|{event.assignment_id}|{event.event_time}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def count_call(event: Event) -> int:
    """Count one more call for ``event`` in ``$SOAPRECEPTOR_TEST_CALLS``; return the count so far."""
    counter = Path(os.environ["SOAPRECEPTOR_TEST_CALLS"]) / event_key(event)
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    return calls


def flaky(event: Event) -> None:
    """Fail the first ``$SOAPRECEPTOR_TEST_FAILURES`` attempts of events whose AssignmentId starts with FLAKY."""
    calls = count_call(event)
    failures = int(os.environ.get("SOAPRECEPTOR_TEST_FAILURES", "2"))
    if (event.assignment_id or "").startswith(FLAKY_PREFIX) and calls <= failures:
        raise FlakyHookError(f"attempt {calls} at {event.assignment_id} fails on purpose")
    record(event)


def refuse(event: Event) -> None:
    """Always fail, as a hook whose downstream system is down would."""
    raise DownstreamRefused(f"downstream refused {event.event_type} {event.assignment_id}")


def wait_for_release(event: Event) -> None:
    """Mark that the hook has started on ``event``, block until the release file exists, then record it."""
    entered = Path(os.environ["SOAPRECEPTOR_TEST_ENTERED"]) / event_key(event)
    entered.touch()
    release = Path(os.environ["SOAPRECEPTOR_TEST_RELEASE"])
    end = time.monotonic() + RELEASE_DEADLINE
    while not release.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{release} did not appear within {RELEASE_DEADLINE:.0f} s")
        time.sleep(0.05)
    record(event)
