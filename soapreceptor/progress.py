"""A dispatcher's progress log: what it has handed to the hook since its last commit to the journal.

A dispatcher claims events in batches and records their outcomes in the
journal once per batch, not once per event: the journal is shared with the
receptor's workers, and a write transaction per event slowed the answers to
MTurk. In between, each event is written here before the hook gets it
(``S id``) and again once the hook has taken it (``D id``). A file write
reaches the page cache at once, so it outlives the process: when a dispatcher
dies (however it dies), whoever frees its claims
(:meth:`soapreceptor.journal.Journal.release`) reads its log and records the
deliveries it made, counts the attempt that was in hand when it died, and
gives back the rest untouched. So a killed dispatcher still leaves at most
one event handed on but not recorded as delivered, as when every outcome
was committed before the next event. (A power cut loses the page cache too:
then those events are handed on again, as at-least-once delivery allows.)

The log lives beside the journal: ``<journal>.progress.<owner>``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path


def path_for(journal: Path, owner: str) -> Path:
    """The progress log of dispatcher ``owner`` on ``journal``."""
    return journal.with_name(f"{journal.name}.progress.{owner}")


def logs_of(journal: Path, owner_prefix: str) -> dict[str, Path]:
    """The progress logs on ``journal`` of dispatchers whose owner name starts with ``owner_prefix``, by owner."""
    stem = f"{journal.name}.progress."
    pattern = str(journal.with_name(glob.escape(stem + owner_prefix) + "*"))
    return {Path(found).name[len(stem) :]: Path(found) for found in glob.glob(pattern)}


@dataclass(frozen=True)
class Progress:
    """What a progress log says: the events the hook took, and the one it had when the log ends."""

    delivered: tuple[int, ...]
    in_hand: int | None


def read(path: Path) -> Progress:
    """Read a progress log; a torn last line (the process died mid-write) is ignored."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return Progress((), None)
    delivered: list[int] = []
    in_hand: int | None = None
    for line in lines:
        kind, _, number = line.partition(b" ")
        if not number.isdigit():
            continue
        if kind == b"S":
            in_hand = int(number)
        elif kind == b"D" and int(number) == in_hand:
            delivered.append(in_hand)
            in_hand = None
    return Progress(tuple(delivered), in_hand)


class ProgressLog:
    """The progress log a running dispatcher writes (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def started(self, event_id: int) -> None:
        """The hook is about to get event ``event_id``."""
        os.write(self._fd, b"S %d\n" % event_id)

    def delivered(self, event_id: int) -> None:
        """The hook took event ``event_id``."""
        os.write(self._fd, b"D %d\n" % event_id)

    def clear(self) -> None:
        """Everything logged is now recorded in the journal."""
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        """Stop logging and remove the log (call only once everything logged is in the journal)."""
        os.close(self._fd)
        self.path.unlink(missing_ok=True)
