"""The dispatcher: at least once, in order, retries on the schedule, dead letters, time limits."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from soapreceptor import Event, dispatch, wire
from soapreceptor.dispatch import (
    DEFAULT_SCHEDULE,
    Dispatcher,
    RetryPolicy,
    _free_claims_of_dead_dispatchers,
    owner_prefix,
    parse_schedule,
)
from soapreceptor.journal import Arrival, Journal, StoredEvent
from tests.support import ACCEPTED_EVENT, DEADLINE, REPO, amazon_envelope, wait_for


class Clock:
    """A clock the test moves by hand, so that hours of backoff take no time."""

    def __init__(self) -> None:
        self.now = 1_000_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "journal.db").open()
    events = [{**ACCEPTED_EVENT, "AssignmentId": f"A{i}"} for i in range(5)]
    body = amazon_envelope(events=events)
    journal.record(wire.parse_notify(body), Arrival(body), now=1_000_000_000.0)
    return journal


def drain(dispatcher: Dispatcher, clock: Clock, limit: int = 100) -> None:
    """Run the dispatcher until nothing is pending, jumping the clock to each retry."""
    for _ in range(limit):
        if dispatcher.step() is None:
            pending = dispatcher.journal.events("pending")
            if not pending:
                return
            clock.now = max(clock.now, min(p.next_attempt_at or clock.now for p in pending))
    raise AssertionError("the journal did not drain")


def test_default_schedule_is_svix_like() -> None:
    assert DEFAULT_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert RetryPolicy().max_attempts == 8


def test_delays_follow_the_schedule_with_bounded_jitter() -> None:
    policy = RetryPolicy((5, 300, 1800))
    rng = random.Random(7)
    for attempts, base in ((1, 5), (2, 300), (3, 1800)):
        delays = [policy.next_delay(attempts, rng) for _ in range(200)]
        assert all(d is not None and base * 0.8 <= d <= base * 1.2 for d in delays)
        assert len(set(delays)) > 1  # jittered, not fixed
    assert policy.next_delay(4, rng) is None


def test_parse_schedule() -> None:
    assert parse_schedule("0.5, 2,10") == (0.5, 2.0, 10.0)
    with pytest.raises(ValueError, match="seconds"):
        parse_schedule("5,soon")
    with pytest.raises(ValueError, match="negative"):
        parse_schedule("5,-1")


def test_every_event_once_in_arrival_order(journal: Journal) -> None:
    seen: list[Event] = []
    clock = Clock()
    drain(Dispatcher(journal, seen.append, clock=clock), clock)
    assert [e.assignment_id for e in seen] == [f"A{i}" for i in range(5)]
    assert {(s.state, s.attempts) for s in journal.events()} == {("delivered", 1)}


def test_a_failing_hook_is_retried_on_the_schedule_until_it_succeeds(journal: Journal) -> None:
    failures = {"A1": 2, "A3": 1}
    calls: list[tuple[str | None, float]] = []
    clock = Clock()

    def flaky(event: Event) -> None:
        calls.append((event.assignment_id, clock.now))
        if failures.get(event.assignment_id or "", 0) > 0:
            failures[event.assignment_id or ""] -= 1
            raise ConnectionError("downstream is down")

    dispatcher = Dispatcher(journal, flaky, retry=RetryPolicy((10, 100), jitter=0.0), clock=clock)
    drain(dispatcher, clock)
    attempts = {s.event.assignment_id: s.attempts for s in journal.events()}
    assert attempts == {"A0": 1, "A1": 3, "A2": 1, "A3": 2, "A4": 1}
    a1 = [t for a, t in calls if a == "A1"]
    assert [round(b - a) for a, b in itertools.pairwise(a1)] == [10, 100]
    assert {s.state for s in journal.events()} == {"delivered"}
    # Other events were not held up behind the failing one.
    assert [a for a, _ in calls][:5] == ["A0", "A1", "A2", "A3", "A4"]


def test_an_always_failing_hook_leaves_dead_events_with_their_last_error(journal: Journal) -> None:
    def broken(event: Event) -> None:
        raise ValueError(f"cannot handle {event.assignment_id}")

    clock = Clock()
    drain(Dispatcher(journal, broken, retry=RetryPolicy((1, 1)), clock=clock), clock)
    dead = journal.events("dead")
    assert len(dead) == 5
    assert all(d.attempts == 3 for d in dead)
    assert dead[0].last_error is not None
    assert dead[0].last_error.startswith("ValueError: cannot handle A0 (at ")
    # Fixed hook, events put back in line: delivered.
    journal.redeliver_dead(clock.now)
    seen: list[Event] = []
    drain(Dispatcher(journal, seen.append, clock=clock), clock)
    assert len(seen) == 5


def test_each_attempt_is_bounded_by_the_hook_timeout(journal: Journal) -> None:
    def stuck(event: Event) -> None:
        time.sleep(120)

    dispatcher = Dispatcher(journal, stuck, retry=RetryPolicy((1,)), hook_timeout=0.2)
    claimed = dispatcher.step()
    assert claimed is not None
    stored = journal.get(claimed.id)
    assert stored is not None
    assert stored.last_error is not None
    assert stored.last_error.startswith("HookTimeout: the hook ran longer than 0.2 s")
    assert stored.state == "pending"  # retried later


def test_run_bounds_each_call_from_its_own_start(journal: Journal) -> None:
    # run() keeps one timer for many calls: calls that together outlast the
    # limit each stay within it, and the one that runs past it is stopped.
    # (The fixture's five events take 0.1 s each against a 0.25 s limit; the
    # last never returns on its own.)
    calls: list[str] = []

    def slow_then_stuck(event: Event) -> None:
        calls.append(event.assignment_id or "")
        time.sleep(120 if event.assignment_id == "A4" else 0.1)

    dispatcher = Dispatcher(journal, slow_then_stuck, retry=RetryPolicy((3600,)), hook_timeout=0.25, idle_wait=0.01)
    handler = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    dispatcher.run(lambda: time.monotonic() - started < DEADLINE and len(journal.events("delivered")) < 4)
    dispatcher.run(lambda: time.monotonic() - started < DEADLINE and not journal.events("pending")[0].last_error)
    assert calls == ["A0", "A1", "A2", "A3", "A4"]
    states = {stored.event.assignment_id: stored for stored in journal.events()}
    assert [states[f"A{i}"].state for i in range(4)] == ["delivered"] * 4
    assert states["A4"].state == "pending"  # retried in an hour
    assert (states["A4"].last_error or "").startswith("HookTimeout: the hook ran longer than 0.25 s")
    # Nothing is left behind: no timer running, the handler as it was.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == handler


def test_run_stops_when_asked(journal: Journal) -> None:
    seen: list[Event] = []
    dispatcher = Dispatcher(journal, seen.append, idle_wait=0.01)
    dispatcher.run(lambda: len(seen) < 5 or bool(journal.events("pending")))
    assert len(seen) == 5


def test_a_dispatcher_that_dies_is_replaced_and_its_event_retried(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "crash.db").open()
    body = amazon_envelope(events=[{**ACCEPTED_EVENT, "AssignmentId": f"A{i}"} for i in range(3)])
    journal.record(wire.parse_notify(body), Arrival(body))
    events_file = tmp_path / "events.jsonl"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SOAPRECEPTOR_")},
        "PYTHONPATH": str(REPO),
        "SOAPRECEPTOR_JOURNAL": str(journal.path),
        "SOAPRECEPTOR_HOOK": "tests.recording_hook:crash_once",
        "SOAPRECEPTOR_TEST_EVENTS": str(events_file),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "soapreceptor.cli", "dispatch"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: {s.state for s in journal.events()} == {"delivered"}, "every event delivered")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, stderr
    # Each event killed its dispatcher once: three replacements, every event then delivered exactly once.
    assert stderr.count("the dispatcher process exited (exit status 7)") == 3
    recorded = [json.loads(line)["assignment_id"] for line in events_file.read_text().splitlines()]
    assert recorded == ["A0", "A1", "A2"]
    assert all(s.attempts == 2 for s in journal.events())


def test_claims_of_dispatchers_that_no_longer_run_are_freed_at_start(journal: Journal) -> None:
    gone = journal.claim(f"{owner_prefix(2**22 + 12345)}dead", lease=3600)  # no such pid
    alive = journal.claim(f"{owner_prefix(os.getpid())}live", lease=3600)
    elsewhere = journal.claim("another-host:1:ffff", lease=3600)
    assert gone is not None
    assert alive is not None
    assert elsewhere is not None
    _free_claims_of_dead_dispatchers(journal)
    retaken = journal.claim("new", lease=60)
    assert retaken is not None
    assert (retaken.id, retaken.last_error) == (gone.id, "its dispatcher was gone when a dispatcher started")
    assert journal.claim("new", lease=60) is not None  # the fourth, never claimed
    assert journal.claim("new", lease=60) is not None  # the fifth
    assert journal.claim("new", lease=60) is None  # the live and the other host's claims stand


def test_a_dispatcher_that_met_the_workers_leaves_them_the_journal_as_long_as_it_held_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receptor's answers wait for the journal while a dispatcher's batch
    # holds it: after a batch that found other writers, the dispatcher pauses
    # as long as it held the journal, within [YIELD_AT_LEAST, YIELD_WHEN_BUSY];
    # after one that found none, it does not pause.
    journal = Journal(tmp_path / "journal.db").open()
    body = amazon_envelope(events=[{**ACCEPTED_EVENT, "AssignmentId": f"A{i}"} for i in range(10)])
    journal.record(wire.parse_notify(body), Arrival(body), now=1_000_000_000.0)
    # What each batch's transaction found (other writers?) and how long it held the journal.
    found = iter([(True, 0.0001), (True, 0.004), (True, 0.5), (False, 0.004)])
    claim_batch = journal.claim_batch

    def claim_and_report(*args: object, **kwargs: object) -> tuple[list[int], list[StoredEvent]]:
        claimed = claim_batch(*args, **kwargs)  # type: ignore[arg-type]
        journal.contended, journal.held = next(found)
        return claimed

    monkeypatch.setattr(journal, "claim_batch", claim_and_report)
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    seen: list[Event] = []
    # Batches of 1, 2, 4 and then 3 of 8 (the last one short: the dispatcher has caught up).
    Dispatcher(journal, seen.append, idle_wait=0.123).run(lambda: len(seen) < 10)
    assert len(seen) == 10
    assert pauses == [dispatch.YIELD_AT_LEAST, 0.004, dispatch.YIELD_WHEN_BUSY, dispatch.GATHER]


def test_a_write_that_waited_for_another_writer_says_so_and_how_long_it_held_the_journal(tmp_path: Path) -> None:
    # What the dispatcher's pause is worked out from (see the test above).
    path = tmp_path / "journal.db"
    writer, other = Journal(path).open(), Journal(path).open()
    writer.check_writable()
    assert not writer.contended
    taken = threading.Event()

    def hold_the_journal() -> None:
        with other._writer_lock():
            taken.set()
            time.sleep(0.2)

    holder = threading.Thread(target=hold_the_journal)
    holder.start()
    try:
        assert taken.wait(DEADLINE)
        with writer._write() as conn:  # waits for the holder
            time.sleep(0.05)
            conn.execute("SELECT 1")
    finally:
        holder.join(DEADLINE)
    assert writer.contended
    assert 0.05 <= writer.held < DEADLINE
