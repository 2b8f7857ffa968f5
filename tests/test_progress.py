"""Batched delivery: claims and outcomes once per batch, and the progress log that keeps a killed dispatcher honest."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from soapreceptor import Event, progress, wire
from soapreceptor.dispatch import Dispatcher, RetryPolicy, owner_prefix
from soapreceptor.journal import Arrival, Journal, Outcome
from soapreceptor.progress import ProgressLog
from tests.support import ACCEPTED_EVENT, amazon_envelope

T0 = 1_000_000_000.0


def fill(journal: Journal, count: int) -> None:
    events = [{**ACCEPTED_EVENT, "AssignmentId": f"A{i:03d}"} for i in range(count)]
    body = amazon_envelope(events=events)
    journal.record(wire.parse_notify(body), Arrival(body), now=T0)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.db").open()


def test_a_log_says_what_was_handed_on_and_what_was_in_hand(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = ProgressLog(path)
    for event_id in (7, 8):
        log.started(event_id)
        log.delivered(event_id)
    log.started(9)
    assert progress.read(path) == progress.Progress((7, 8), 9)
    log.clear()
    log.started(10)
    assert progress.read(path) == progress.Progress((), 10)
    log.close()
    assert not path.exists()
    assert progress.read(path) == progress.Progress((), None)


def test_a_torn_last_line_is_not_read_as_a_delivery(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"S 1\nD 1\nS 2\nD")  # killed in the middle of writing "D 2"
    assert progress.read(path) == progress.Progress((1,), 2)


def test_logs_are_found_by_owner_prefix(journal: Journal) -> None:
    mine = ProgressLog(progress.path_for(journal.path, "host:12:aa"))
    other = ProgressLog(progress.path_for(journal.path, "host:123:bb"))
    assert set(progress.logs_of(journal.path, "host:12:")) == {"host:12:aa"}
    assert set(progress.logs_of(journal.path, "host:")) == {"host:12:aa", "host:123:bb"}
    mine.close()
    other.close()


def test_release_records_what_the_log_says_and_charges_only_the_event_in_hand(journal: Journal) -> None:
    fill(journal, 5)
    owner = f"{socket.gethostname()}:99999999:dead"
    _, claimed = journal.claim_batch(owner, lease=3600, limit=5, now=T0)
    assert [c.attempts for c in claimed] == [0] * 5, "a batch claim charges no attempt"
    ids = [c.id for c in claimed]
    log = ProgressLog(progress.path_for(journal.path, owner))
    for event_id in ids[:2]:
        log.started(event_id)
        log.delivered(event_id)
    log.started(ids[2])  # the dispatcher dies here, inside the hook

    freed = journal.release(f"{socket.gethostname()}:99999999:", "the dispatcher process died: killed by signal 9")

    assert freed == 3
    after = {stored.id: stored for stored in journal.events()}
    assert [(after[i].state, after[i].attempts, after[i].last_error) for i in ids] == [
        ("delivered", 1, None),
        ("delivered", 1, None),
        ("pending", 1, "the dispatcher process died: killed by signal 9"),
        ("pending", 0, None),
        ("pending", 0, None),
    ]
    assert journal.lease_owners() == []
    assert not progress.path_for(journal.path, owner).exists()


def test_an_expired_lease_charges_the_attempt_its_dispatcher_never_reported(journal: Journal) -> None:
    fill(journal, 2)
    journal.claim_batch("gone-elsewhere", lease=10, limit=2, now=T0)
    _, retaken = journal.claim_batch("new", lease=10, limit=2, now=T0 + 11)
    assert [stored.attempts for stored in retaken] == [1, 1]
    lost, _ = journal.claim_batch("new", 10, 2, [Outcome(retaken[0].id, "delivered", count=True)], now=T0 + 12)
    assert lost == []
    assert journal.get(retaken[0].id) is not None
    assert journal.get(retaken[0].id).attempts == 2  # type: ignore[union-attr]


class Counting(Journal):
    """A journal that counts the dispatcher's batch claims."""

    claims = 0

    def claim_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.claims += 1
        return super().claim_batch(*args, **kwargs)


def test_a_fast_hook_gets_every_event_once_in_order_in_batches(tmp_path: Path) -> None:
    journal = Counting(tmp_path / "journal.db")
    journal.open()
    fill(journal, 200)
    seen: list[str] = []

    def hook(event: Event) -> None:
        seen.append(str(event.assignment_id))

    dispatcher = Dispatcher(journal=journal, hook=hook, idle_wait=0.01)
    dispatcher.run(lambda: journal.counts()["pending"] > 0)

    assert seen == [f"A{i:03d}" for i in range(200)]
    assert [(s.state, s.attempts) for s in journal.events()] == [("delivered", 1)] * 200
    assert journal.claims < 200 / 4, f"{journal.claims} claims for 200 events: not batched"
    assert not progress.logs_of(journal.path, ""), "a dispatcher that stops cleanly leaves no log"


def test_a_failure_in_a_batch_is_recorded_and_retried_without_holding_up_the_rest(journal: Journal) -> None:
    fill(journal, 20)
    failed: set[str] = set()
    seen: list[str] = []

    def hook(event: Event) -> None:
        name = str(event.assignment_id)
        if name == "A007" and name not in failed:
            failed.add(name)
            raise RuntimeError("downstream hiccup")
        seen.append(name)

    dispatcher = Dispatcher(journal=journal, hook=hook, retry=RetryPolicy(schedule=(0.0,), jitter=0), idle_wait=0.01)
    dispatcher.run(lambda: journal.counts()["pending"] > 0)

    assert sorted(seen) == [f"A{i:03d}" for i in range(20)]
    assert seen.index("A008") < seen.index("A007"), "the failed event waited for its retry, the others did not"
    attempts = {str(s.event.assignment_id): (s.state, s.attempts) for s in journal.events()}
    assert attempts.pop("A007") == ("delivered", 2)
    assert set(attempts.values()) == {("delivered", 1)}
    stored = next(s for s in journal.events() if s.event.assignment_id == "A007")
    assert stored.last_error is not None
    assert "RuntimeError: downstream hiccup" in stored.last_error


def test_owner_prefix_matches_the_supervisors_release(journal: Journal) -> None:
    """The supervisor frees its dead child's claims by pid prefix: the child's log is found by it."""
    fill(journal, 1)
    owner = f"{owner_prefix(4242)}cafe"
    _, claimed = journal.claim_batch(owner, lease=3600, limit=1, now=T0)
    log = ProgressLog(progress.path_for(journal.path, owner))
    log.started(claimed[0].id)
    log.delivered(claimed[0].id)
    assert journal.release(owner_prefix(4242), "died") == 0  # nothing left to free: it was delivered
    assert journal.events()[0].state == "delivered"
