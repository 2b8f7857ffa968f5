"""Hooks for tests that run a real server: they record what reached them in a JSON-lines file.

The file is ``$SOAPRECEPTOR_TEST_EVENTS``; each worker appends one line per
event with a single write, so lines from several workers never interleave.
"""

from __future__ import annotations

import json
import os

from soapreceptor import Event


def record(event: Event) -> None:
    """Record ``event``."""
    line = json.dumps({**event.as_json(), "pid": os.getpid()})
    with open(os.environ["SOAPRECEPTOR_TEST_EVENTS"], "a", encoding="utf-8") as out:
        out.write(line + "\n")


def fail(event: Event) -> None:
    """Always fail, as a broken user hook would."""
    raise RuntimeError(f"this hook always fails ({event.event_type})")


NOT_CALLABLE = 42


def crash_once(event: Event) -> None:
    """Kill the whole process the first time it sees an event, as a crashing C extension would; then record."""
    marker = f"{os.environ['SOAPRECEPTOR_TEST_EVENTS']}.crashed-{event.assignment_id}"
    if not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8"):
            pass
        os._exit(7)
    record(event)
