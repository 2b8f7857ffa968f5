"""``soapreceptor simulate``: MTurk-like notification traffic, sent at a chosen rate, with latency and a journal check.

Two halves. :func:`plan` is a pure, seeded traffic model: the same arguments
always give the same messages. :func:`run` sends a plan with the zeep
:class:`~soapreceptor.sender.Sender` and measures every answer;
:func:`check_journal` then compares the receptor's journal with what it
accepted.

The model runs on MTurk's clock, which starts at ``start`` (proportions are
draws from the seeded RNG; durations are exponential with the mean given):

- HITs come in groups of 1 to 10 (uniform) sharing a ``HITTypeId``, as a
  requester publishes a batch of HITs of one type at once; the next group is
  published 2 minutes per HIT of the previous group later, on average.
- IDs are opaque and MTurk-like: 30 uppercase letters and digits, all unique.
- Each HIT has K assignment slots (``assignments``). A worker accepts a slot
  (``AssignmentAccepted``, 3 minutes after publication) and then submits it
  (75 %, ``AssignmentSubmitted`` 30 s + 5 minutes later), returns it (15 %,
  ``AssignmentReturned`` 6 s + 2 minutes later) or abandons it (10 %,
  ``AssignmentAbandoned`` when the 15-minute assignment duration runs out).
  After a return or an abandonment another worker accepts the slot with
  probability 0.8 (3 minutes later), at most 4 workers per slot; otherwise the
  slot stays open. Each acceptance is a new assignment, so at most K
  assignments of a HIT are ever submitted.
- A HIT whose K slots are all submitted becomes ``HITReviewable`` at the
  moment of the last submission; any other ends ``HITExpired``, 3 minutes
  after its last assignment event.
- About 1 % of messages are followed by a ``Ping`` (a message of its own,
  with an ``EventTime`` and no HIT fields; never two in the same second).
- Events at most ``BATCH_WINDOW`` (1 s) after the first event of a batch share
  its message, at most ``BATCH_CAP`` (10) events, as MTurk batched them. A
  message leaves when its last event has happened.

``EventTime`` is in whole seconds, as MTurk sent it. The plan then replays
MTurk's clock sped up (or slowed down) so that messages leave at ``rate`` per
second on average over the whole plan: ``send_at`` is on the sender's clock,
``EventTime`` on MTurk's (so event times run ahead of the wall clock when the
replay is faster than life). Activity ramps up and down at the plan's ends.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import random
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple, TextIO

from . import versions
from .errors import ConfigError, SendError
from .journal import Journal, JournalError
from .model import EventType
from .sender import EventSpec, Sender
from .settings import require_http_url, required_signing_secret
from .timestamps import format_timestamp

ID_LENGTH: Final[int] = 30
ID_ALPHABET: Final[str] = string.ascii_uppercase + string.digits

#: Events this close (seconds) after a batch's first event join its message.
BATCH_WINDOW: Final[float] = 1.0
#: At most this many events in one message.
BATCH_CAP: Final[int] = 10

SUBMITTED_SHARE: Final[float] = 0.75
RETURNED_SHARE: Final[float] = 0.15  # the rest (0.10) is abandoned
REPLACEMENT_CHANCE: Final[float] = 0.8
WORKERS_PER_SLOT: Final[int] = 4
PING_CHANCE: Final[float] = 0.01
GROUP_SIZES: Final[tuple[int, int]] = (1, 10)

# Durations on MTurk's clock, in seconds (means of exponential draws, but for the minimums
# and the assignment duration).
_PUBLISH_GAP_PER_HIT: Final[float] = 120.0
_FIRST_ACCEPT: Final[float] = 180.0
_WORK_MIN: Final[float] = 30.0
_WORK: Final[float] = 300.0
_RETURN_MIN: Final[float] = 6.0
_RETURN: Final[float] = 120.0
_ASSIGNMENT_DURATION: Final[float] = 900.0
_REACCEPT: Final[float] = 180.0
_EXPIRY: Final[float] = 180.0

PROGRESS_EVERY: Final[int] = 100
#: At most this many SendError messages are kept in a report.
MAX_FAILURES_KEPT: Final[int] = 10


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """One Notify call of a plan: sent ``send_at`` seconds after the start, carrying ``events``."""

    send_at: float
    events: tuple[EventSpec, ...]


class _Timed(NamedTuple):
    at: float  # seconds after the start, on MTurk's clock
    seq: int  # creation order: breaks ties so causes come before effects
    event: EventSpec


def plan(  # noqa: PLR0917 (the traffic model's parameters, in the order the issue gives them)
    hits: int,
    assignments: int,
    seed: int,
    start: dt.datetime,
    rate: float,
    duration: float | None = None,
) -> list[PlannedMessage]:
    """The messages MTurk would send for ``hits`` HITs of ``assignments`` assignments each (see the module doc).

    ``start`` (an aware datetime) is when MTurk's clock starts, dating every
    ``EventTime``; ``rate`` is the average number of messages per second of
    sending; ``duration`` (seconds of sending) drops the messages planned
    after it. The same arguments always give the same plan.
    """
    if hits < 0:
        raise ValueError(f"hits must be 0 or more, not {hits}")
    if assignments < 1:
        raise ValueError(f"assignments must be 1 or more, not {assignments}")
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate must be a positive number of messages per second, not {rate}")
    if duration is not None and not duration >= 0:
        raise ValueError(f"duration must be 0 or more seconds, not {duration}")
    if start.tzinfo is None:
        raise ValueError("start must be an aware datetime")
    rng = random.Random(seed)  # noqa: S311 (simulated traffic, not security)
    timeline = _life_cycles(rng, hits, assignments)
    if not timeline:
        return []
    base = start.astimezone(dt.UTC)
    # (MTurk time in seconds from the start, events) for each message, pings included.
    batches = _with_pings(rng, _batches(timeline), base)
    span = batches[-1][0]
    # Replay MTurk's clock faster or slower so that the messages leave at ``rate`` on average.
    factor = len(batches) / (rate * span) if span > 0 else 0.0
    messages = [PlannedMessage(at * factor, events) for at, events in batches]
    if duration is not None:
        messages = [message for message in messages if message.send_at <= duration]
    return messages


def _life_cycles(rng: random.Random, hits: int, slots: int) -> list[_Timed]:
    """Every HIT's events on MTurk's clock, sorted."""
    used: set[str] = set()

    def new_id() -> str:
        while True:
            candidate = "".join(rng.choices(ID_ALPHABET, k=ID_LENGTH))
            if candidate not in used:
                used.add(candidate)
                return candidate

    timeline: list[_Timed] = []

    def add(at: float, event_type: str, hit_type: str, hit: str, assignment: str | None = None) -> None:
        timeline.append(_Timed(at, len(timeline), EventSpec(str(event_type), hit_type, hit, assignment)))

    published = 0.0
    remaining = hits
    while remaining:
        group = min(remaining, rng.randint(*GROUP_SIZES))
        remaining -= group
        hit_type = new_id()
        for _ in range(group):
            hit = new_id()
            submitted_at: list[float] = []
            last = published
            for _slot in range(slots):
                at = published + rng.expovariate(1 / _FIRST_ACCEPT)
                for worker in range(WORKERS_PER_SLOT):
                    assignment = new_id()
                    add(at, EventType.ASSIGNMENT_ACCEPTED, hit_type, hit, assignment)
                    outcome = rng.random()
                    if outcome < SUBMITTED_SHARE:
                        at += _WORK_MIN + rng.expovariate(1 / _WORK)
                        add(at, EventType.ASSIGNMENT_SUBMITTED, hit_type, hit, assignment)
                        submitted_at.append(at)
                        last = max(last, at)
                        break
                    if outcome < SUBMITTED_SHARE + RETURNED_SHARE:
                        at += _RETURN_MIN + rng.expovariate(1 / _RETURN)
                        add(at, EventType.ASSIGNMENT_RETURNED, hit_type, hit, assignment)
                    else:
                        at += _ASSIGNMENT_DURATION
                        add(at, EventType.ASSIGNMENT_ABANDONED, hit_type, hit, assignment)
                    last = max(last, at)
                    if worker + 1 == WORKERS_PER_SLOT or rng.random() >= REPLACEMENT_CHANCE:
                        break
                    at += rng.expovariate(1 / _REACCEPT)
            if len(submitted_at) == slots:
                add(max(submitted_at), EventType.HIT_REVIEWABLE, hit_type, hit)
            else:
                add(last + rng.expovariate(1 / _EXPIRY), EventType.HIT_EXPIRED, hit_type, hit)
        published += rng.expovariate(1 / (_PUBLISH_GAP_PER_HIT * group))
    timeline.sort(key=lambda item: (item.at, item.seq))
    return timeline


def _batches(timeline: Sequence[_Timed]) -> list[list[_Timed]]:
    """Group a sorted timeline into messages: ``BATCH_WINDOW`` s from a batch's first event, ``BATCH_CAP`` events."""
    batches: list[list[_Timed]] = []
    current: list[_Timed] = []
    for item in timeline:
        if current and (len(current) >= BATCH_CAP or item.at - current[0].at > BATCH_WINDOW):
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


def _dated(event: EventSpec, base: dt.datetime, seconds: float) -> EventSpec:
    """``event`` with its EventTime: ``seconds`` after ``base``, in whole seconds (never later than that)."""
    return event._replace(event_time=_second(base, seconds))


def _second(base: dt.datetime, seconds: float) -> dt.datetime:
    """The whole second ``seconds`` after ``base`` falls in (rounded down)."""
    return (base + dt.timedelta(seconds=seconds)).replace(microsecond=0)


def _with_pings(
    rng: random.Random, batches: Sequence[Sequence[_Timed]], base: dt.datetime
) -> list[tuple[float, tuple[EventSpec, ...]]]:
    """Date the batches' events, each batch sent at its last event, and insert a Ping message after about
    ``PING_CHANCE`` of them, before the next batch's first event; no two Pings in the same second."""
    result: list[tuple[float, tuple[EventSpec, ...]]] = []
    seconds: set[dt.datetime] = set()
    for index, batch in enumerate(batches):
        at = batch[-1].at
        result.append((at, tuple(_dated(item.event, base, item.at) for item in batch)))
        if rng.random() >= PING_CHANCE:
            continue
        following = batches[index + 1][0].at if index + 1 < len(batches) else at
        ping_at = rng.uniform(at, following)
        moment = _second(base, ping_at)
        if moment in seconds:
            continue
        seconds.add(moment)
        result.append((ping_at, (EventSpec(str(EventType.PING), event_time=moment),)))
    return result


# -- sending ----------------------------------------------------------------------


class Percentiles(NamedTuple):
    """Nearest-rank percentiles of a sample (here, answer latencies in milliseconds)."""

    p50: float
    p95: float
    p99: float
    max: float


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank ``percent`` percentile of ``values`` (not empty): the smallest value with at least
    ``percent`` % of the sample at or below it."""
    if not values:
        raise ValueError("no values")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], not {percent}")
    ordered = sorted(values)
    rank = math.ceil(percent / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass
class SimulationReport:
    """What :func:`run` sent and what came back.

    Counts are of messages and of the events they carried. ``refused`` counts
    refused messages by faultcode; ``failed`` messages got no SOAP answer
    (:class:`~soapreceptor.errors.SendError`): the receptor may or may not have
    stored their events, which are kept in ``unconfirmed_events``.
    ``latencies_ms`` has one entry per answered message.
    """

    url: str
    version: str
    messages_sent: int = 0
    events_sent: int = 0
    messages_accepted: int = 0
    events_accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    events_refused: int = 0
    messages_failed: int = 0
    events_failed: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    accepted_events: list[EventSpec] = field(default_factory=list)
    unconfirmed_events: list[EventSpec] = field(default_factory=list)
    elapsed_s: float = 0.0
    max_lag_ms: float = 0.0

    @property
    def messages_refused(self) -> int:
        """How many messages were answered with a SOAP fault."""
        return sum(self.refused.values())

    @property
    def all_accepted(self) -> bool:
        """Every message sent was accepted."""
        return self.messages_accepted == self.messages_sent

    @property
    def latency_ms(self) -> Percentiles | None:
        """p50, p95, p99 and max of the answer latencies in milliseconds; None before any answer."""
        if not self.latencies_ms:
            return None
        values = self.latencies_ms
        return Percentiles(percentile(values, 50), percentile(values, 95), percentile(values, 99), max(values))

    def format(self) -> str:
        """A human-readable multi-line summary."""
        rate = self.messages_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"simulation: {self.messages_sent} messages ({self.events_sent} events) to {self.url}, "
            f"version {self.version}, in {self.elapsed_s:.1f} s ({rate:.1f} messages/s)",
            f"  accepted: {self.messages_accepted} messages ({self.events_accepted} events)",
            f"  refused:  {self.messages_refused} messages ({self.events_refused} events)"
            + "".join(f"\n    {code}: {count}" for code, count in sorted(self.refused.items())),
            f"  no answer: {self.messages_failed} messages ({self.events_failed} events)"
            + "".join(f"\n    {failure}" for failure in self.failures),
        ]
        latency = self.latency_ms
        if latency is None:
            lines.append("  latency: no answer measured")
        else:
            lines.append(
                f"  latency ms: p50 {latency.p50:.1f}, p95 {latency.p95:.1f}, p99 {latency.p99:.1f}, "
                f"max {latency.max:.1f}"
            )
        lines.append(f"  behind schedule: at most {self.max_lag_ms:.0f} ms")
        return "\n".join(lines)


def run(
    url: str,
    secret: str | None,
    planned: Sequence[PlannedMessage],
    version: str = versions.DEFAULT_VERSION,
    realtime: bool = True,
    *,
    timeout: float = 30.0,
    progress: Callable[[SimulationReport], None] | None = None,
) -> SimulationReport:
    """Send each planned message to ``url`` and report what came back.

    With ``realtime`` each message goes out ``send_at`` seconds after the
    start (by the monotonic clock; a message already late goes at once and
    the lag is reported), otherwise all go back to back. ``secret`` signs the
    messages (None: unsigned). ``progress`` is called after each message.
    Planned events should carry their ``event_time`` (:func:`plan`'s do), or
    :func:`check_journal` cannot match them.
    """
    sender = Sender(url, secret, version=version, timeout=timeout)
    report = SimulationReport(url=url, version=version)
    began = time.monotonic()
    for message in planned:
        if realtime:
            delay = began + message.send_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                report.max_lag_ms = max(report.max_lag_ms, -delay * 1000)
        count = len(message.events)
        report.messages_sent += 1
        report.events_sent += count
        sent = time.perf_counter()
        try:
            result = sender.send(message.events)
        except SendError as exc:
            report.messages_failed += 1
            report.events_failed += count
            report.unconfirmed_events.extend(message.events)
            if len(report.failures) < MAX_FAILURES_KEPT:
                report.failures.append(str(exc))
        else:
            report.latencies_ms.append((time.perf_counter() - sent) * 1000)
            if result.accepted:
                report.messages_accepted += 1
                report.events_accepted += count
                report.accepted_events.extend(message.events)
            else:
                report.refused[result.faultcode or "?"] += 1
                report.events_refused += count
        report.elapsed_s = time.monotonic() - began
        if progress is not None:
            progress(report)
    report.elapsed_s = time.monotonic() - began
    return report


# -- checking the journal ------------------------------------------------------------

_Key = tuple[str, str | None, str | None, str | None]


def _key(event_type: str, hit_id: str | None, assignment_id: str | None, event_time: dt.datetime | None) -> _Key:
    return (event_type, hit_id, assignment_id, format_timestamp(event_time) if event_time else None)


def _describe(key: _Key) -> str:
    event_type, hit_id, assignment_id, event_time = key
    parts = [event_type, f"at {event_time}" if event_time else "with no EventTime"]
    if hit_id:
        parts.append(f"HIT {hit_id}")
    if assignment_id:
        parts.append(f"assignment {assignment_id}")
    return " ".join(parts)


def _counted(events: Iterable[EventSpec]) -> Counter[_Key]:
    return Counter(_key(e.event_type, e.hit_id, e.assignment_id, e.event_time) for e in events)


def check_journal(journal_path: str | os.PathLike[str], report: SimulationReport) -> list[str]:
    """Compare the receptor's journal with what ``report`` says it accepted; return the problems found.

    Events match on (EventType, HITId, AssignmentId, EventTime). Every
    accepted event must be in the journal exactly once as a non-duplicate,
    and the journal must hold no other non-duplicate event (events of
    messages that got no answer may be there, at most once). So the journal
    should be fresh. An empty list: the journal holds exactly what was sent.
    """
    path = Path(journal_path)
    if not path.is_file():
        return [f"no journal at {path}"]
    journal = Journal(path)
    try:
        stored = journal.events()
    except JournalError as exc:
        return [str(exc)]
    finally:
        journal.close()
    found = Counter(
        _key(s.event.event_type, s.event.hit_id, s.event.assignment_id, s.event.event_time)
        for s in stored
        if s.state != "duplicate"
    )
    accepted = _counted(report.accepted_events)
    unconfirmed = _counted(report.unconfirmed_events)
    problems: list[str] = []
    for key, wanted in accepted.items():
        have = found[key]
        if have == 0:
            problems.append(f"missing from the journal: {_describe(key)}")
        elif have < wanted:
            problems.append(f"accepted {wanted} times but stored {have} times: {_describe(key)}")
    for key, have in found.items():
        allowed = accepted[key] + unconfirmed[key]
        if allowed == 0:
            problems.append(f"in the journal but never sent: {_describe(key)}")
        elif have > allowed:
            problems.append(f"stored {have} times but sent {allowed} times: {_describe(key)}")
    return problems


# -- the command ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` command's options to ``parser``."""
    parser.add_argument("--url", required=True, help="the receptor's URL")
    parser.add_argument("--hits", type=_count, default=10, metavar="N", help="HITs to simulate (default %(default)s)")
    parser.add_argument(
        "--assignments", type=_positive_int, default=3, metavar="K", help="assignments per HIT (default %(default)s)"
    )
    parser.add_argument(
        "--rate", type=_positive_float, default=20.0, metavar="R", help="messages per second (default %(default)g)"
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        metavar="S",
        help="stop after S seconds of traffic (default: the whole plan)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="X", help="random seed of the plan (default 0)")
    parser.add_argument(
        "--version",
        dest="notification_version",
        default=versions.DEFAULT_VERSION,
        choices=versions.VERSIONS,
        metavar="V",
        help="notification API version: %(choices)s (default %(default)s)",
    )
    parser.add_argument(
        "--secret", help="signing key (default: SOAPRECEPTOR_SECRET, or the first of SOAPRECEPTOR_SECRET_FILE)"
    )
    parser.add_argument(
        "--expect-journal",
        metavar="PATH",
        help="afterwards, check that this (fresh) journal holds exactly the events accepted",
    )


def command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Plan, send in real time, print the report; 0 if all was accepted (and the journal matches), else 1."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        require_http_url(args.url, "--url")
        secret = required_signing_secret(args.secret, "simulate")
    except ConfigError as exc:
        print(f"soapreceptor: {exc}", file=err)
        return 2
    planned = plan(args.hits, args.assignments, args.seed, dt.datetime.now(dt.UTC), args.rate, args.duration)
    events = sum(len(message.events) for message in planned)
    expected = planned[-1].send_at if planned else 0.0
    print(
        f"simulate: {len(planned)} messages ({events} events) over {expected:.1f} s, "
        f"{args.hits} HITs x {args.assignments} assignments, seed {args.seed}",
        file=err,
        flush=True,
    )

    def progress(report: SimulationReport) -> None:
        if report.messages_sent % PROGRESS_EVERY == 0:
            print(
                f"... {report.messages_sent}/{len(planned)} sent, {report.messages_accepted} accepted, "
                f"{report.messages_refused} refused, {report.messages_failed} no answer",
                file=err,
                flush=True,
            )

    report = run(args.url, secret, planned, args.notification_version, realtime=True, progress=progress)
    print(report.format(), file=out)
    ok = report.all_accepted
    if args.expect_journal:
        # The receptor commits each message to the journal before its 200: no wait is needed.
        problems = check_journal(args.expect_journal, report)
        if problems:
            ok = False
            print(f"journal {args.expect_journal}: {len(problems)} problem(s)", file=out)
            for problem in problems[:20]:
                print(f"  {problem}", file=out)
            if len(problems) > 20:
                print(f"  ... and {len(problems) - 20} more", file=out)
        else:
            print(
                f"journal {args.expect_journal}: holds exactly the {report.events_accepted} events accepted", file=out
            )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m soapreceptor.simulate``: the command on its own, until it is wired into the CLI."""
    parser = argparse.ArgumentParser(prog="soapreceptor simulate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
