"""Demo traffic for ``make run``: wait for the receptor, send one HIT's life cycle, say how to send more.

python -m soapreceptor.demo URL    (signs with SOAPRECEPTOR_SECRET)
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin

from .errors import SendError
from .sender import EventSpec, Sender

#: One HIT, two workers: the first submits, the second returns it; then the HIT is reviewable.
LIFE_CYCLE: tuple[tuple[EventSpec, ...], ...] = (
    (EventSpec("Ping"),),
    (EventSpec("AssignmentAccepted", "DEMOTYPE", "DEMOHIT1", "DEMOASSIGNMENT1"),),
    (
        EventSpec("AssignmentAccepted", "DEMOTYPE", "DEMOHIT1", "DEMOASSIGNMENT2"),
        EventSpec("AssignmentSubmitted", "DEMOTYPE", "DEMOHIT1", "DEMOASSIGNMENT1"),
    ),
    (EventSpec("AssignmentReturned", "DEMOTYPE", "DEMOHIT1", "DEMOASSIGNMENT2"),),
    (EventSpec("HITReviewable", "DEMOTYPE", "DEMOHIT1"),),
)


def wait_until_up(url: str, deadline: float) -> bool:
    """Poll the receptor's ``/healthz`` until it answers, ``deadline`` (a monotonic time) passes,
    or the process that started this one (the server, under ``soapreceptor serve --demo``) is gone."""
    health = urljoin(url, "/healthz")
    parent = os.getppid()
    while time.monotonic() < deadline and os.getppid() == parent:
        try:
            with urllib.request.urlopen(health, timeout=2) as answer:  # noqa: S310 (http URL we were given)
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def main(argv: list[str]) -> int:
    """Send the demo life cycle to ``argv[0]``; exit 0 when every message was accepted."""
    url = argv[0] if argv else "http://127.0.0.1:8080/"
    if not wait_until_up(url, time.monotonic() + 60):
        print(
            f"[demo] no receptor answered at {url} (it did not start, or stopped); no demo traffic sent",
            file=sys.stderr,
        )
        return 3
    sender = Sender(url, os.environ.get("SOAPRECEPTOR_SECRET") or None)
    refused = 0
    for events in LIFE_CYCLE:
        try:
            result = sender.send(events)
        except SendError as exc:
            print(f"[demo] {exc}", file=sys.stderr)
            return 3
        refused += not result.accepted
        print(f"[demo] sent {', '.join(e.event_type for e in events)}: {result}", flush=True)
    print(
        "[demo] send your own, e.g.:\n"
        f"  SOAPRECEPTOR_SECRET=... .venv/bin/soapreceptor send --url {url} "
        "--event AssignmentAccepted:TYPE:HIT:ASSIGNMENT",
        flush=True,
    )
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
