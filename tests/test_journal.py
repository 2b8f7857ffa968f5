"""The SQLite journal: durable settings, duplicates, claims and leases, operators' changes."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import pytest

from soapreceptor import wire
from soapreceptor.journal import Arrival, Journal, JournalError, dedup_key
from soapreceptor.model import Notification
from tests.support import ACCEPTED_EVENT, amazon_envelope

T0 = 1_000_000_000.0


def message(*assignments: str, timestamp: str = "2006-05-23T23:22:30Z") -> tuple[Notification, Arrival]:
    events = [{**ACCEPTED_EVENT, "AssignmentId": a} for a in assignments] or [ACCEPTED_EVENT]
    body = amazon_envelope(events=events, timestamp=timestamp)
    return wire.parse_notify(body), Arrival(body=body, request_id="r1", remote_addr="127.0.0.1")


def query(path: Path, sql: str) -> tuple[object, ...]:
    """One row of ``sql`` over a connection of the test's own, closed at once."""
    with closing(sqlite3.connect(path)) as conn:
        return tuple(conn.execute(sql).fetchone())


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.db").open()


def test_durable_settings(journal: Journal) -> None:
    assert query(journal.path, "PRAGMA journal_mode") == ("wal",)
    # synchronous is per connection: check the journal's own.
    assert journal._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_record_keeps_the_raw_message_and_its_events_in_order(journal: Journal) -> None:
    notification, arrival = message("A1", "A2", "A3")
    recorded = journal.record(notification, arrival, T0)
    assert (recorded.pending, recorded.duplicates, recorded.duplicate_message) == (3, 0, False)
    stored = journal.events()
    assert [s.event for s in stored] == list(notification.events)
    assert {s.state for s in stored} == {"pending"}
    row = query(journal.path, "SELECT body, timestamp, signature, version FROM messages")
    assert row == (arrival.body, "2006-05-23T23:22:30Z", "SCKBAzx2/Kt3aYqRcDjBAqOSm+o=", "2006-05-05")


def test_the_same_message_again_is_a_duplicate(journal: Journal) -> None:
    notification, arrival = message("A1", "A2")
    journal.record(notification, arrival, T0)
    again = journal.record(notification, arrival, T0 + 1)
    assert (again.pending, again.duplicates, again.duplicate_message) == (0, 2, True)
    first, second = journal.events("pending"), journal.events("duplicate")
    assert [d.duplicate_of for d in second] == [f.id for f in first]
    assert journal.counts() == {"pending": 2, "delivered": 0, "dead": 0, "duplicate": 2}


def test_the_same_event_in_another_message_is_a_duplicate(journal: Journal) -> None:
    journal.record(*message("A1", "A2"), T0)
    recorded = journal.record(*message("A2", "A3"), T0)
    assert (recorded.pending, recorded.duplicates, recorded.duplicate_message) == (1, 1, False)
    assert [s.event.assignment_id for s in journal.events("pending")] == ["A1", "A2", "A3"]


def test_two_messages_with_the_same_timestamp_and_signature_are_both_kept(journal: Journal) -> None:
    # The signature covers only the Timestamp: two messages sent in the same
    # second share Timestamp and Signature and are still two messages.
    first, second = message("A1"), message("B1")
    assert (first[0].timestamp, first[0].signature) == (second[0].timestamp, second[0].signature)
    journal.record(*first, T0)
    journal.record(*second, T0)
    assert [s.event.assignment_id for s in journal.events("pending")] == ["A1", "B1"]


def test_events_without_event_time_are_never_taken_for_duplicates(journal: Journal) -> None:
    body = amazon_envelope(events=[{"EventType": "Ping"}, {"EventType": "Ping"}])
    assert dedup_key(wire.parse_notify(body).events[0]) is None
    journal.record(wire.parse_notify(body), Arrival(body), T0)
    body2 = body.replace(b"<Version>", b"<!-- another --><Version>")
    journal.record(wire.parse_notify(body2), Arrival(body2), T0)
    assert len(journal.events("pending")) == 4


def test_claims_take_the_oldest_due_event_under_a_lease(journal: Journal) -> None:
    journal.record(*message("A1", "A2"), T0)
    first = journal.claim("one", lease=60, now=T0)
    second = journal.claim("two", lease=60, now=T0)
    assert first is not None
    assert second is not None
    assert (first.event.assignment_id, first.attempts) == ("A1", 1)
    assert second.event.assignment_id == "A2"
    assert journal.claim("three", lease=60, now=T0) is None  # both leased
    # The holder of the first died: its lease runs out and another takes the event.
    retaken = journal.claim("three", lease=60, now=T0 + 61)
    assert retaken is not None
    assert (retaken.id, retaken.attempts) == (first.id, 2)
    assert not journal.delivered(first.id, "one", T0 + 62)  # "one" lost its claim
    assert journal.delivered(first.id, "three", T0 + 62)


def test_failed_attempts_wait_for_their_retry_and_then_die(journal: Journal) -> None:
    journal.record(*message("A1"), T0)
    claimed = journal.claim("d", 60, T0)
    assert claimed is not None
    assert journal.failed(claimed.id, "d", "RuntimeError: boom", retry_at=T0 + 5, now=T0)
    assert journal.claim("d", 60, T0 + 4) is None
    again = journal.claim("d", 60, T0 + 5)
    assert again is not None
    assert again.attempts == 2
    assert journal.failed(again.id, "d", "RuntimeError: still", retry_at=None, now=T0 + 5)
    (dead,) = journal.events("dead")
    assert (dead.attempts, dead.last_error) == (2, "RuntimeError: still")


def test_oldest_pending_is_the_arrival_of_the_oldest_event_not_yet_handed_on(journal: Journal) -> None:
    assert journal.oldest_pending() is None
    # Appended, not yet queued: the message's arrival counts.
    journal.append_many([(*message("A1", "A2"), T0), (*message("B1"), T0 + 10)])
    assert journal.oldest_pending() == T0
    first = journal.claim("d", 60, T0 + 20)  # queues both messages' events
    assert first is not None
    assert first.event.assignment_id == "A1"
    assert journal.oldest_pending() == T0  # claimed is not handed on yet
    assert journal.delivered(first.id, "d", T0 + 21)
    assert journal.oldest_pending() == T0  # A2 of the same message still waits
    second = journal.claim("d", 60, T0 + 22)
    assert second is not None
    # A failed attempt waiting for its retry is still pending: the hook is behind.
    assert journal.failed(second.id, "d", "RuntimeError: boom", retry_at=T0 + 300, now=T0 + 23)
    assert journal.oldest_pending() == T0
    third = journal.claim("d", 60, T0 + 24)
    assert third is not None
    assert third.event.assignment_id == "B1"
    assert journal.delivered(third.id, "d", T0 + 25)
    retried = journal.claim("d", 60, T0 + 300)
    assert retried is not None
    assert retried.id == second.id
    assert journal.failed(second.id, "d", "RuntimeError: again", retry_at=None, now=T0 + 301)
    assert journal.oldest_pending() is None  # delivered or dead: nothing waits
    # A message whose every event is a duplicate waits only until it is judged.
    journal.append_many([(*message("B1"), T0 + 400)])
    assert journal.oldest_pending() == T0 + 400
    journal.queue_events()
    assert journal.oldest_pending() is None


def test_redeliver(journal: Journal) -> None:
    journal.record(*message("A1", "A2"), T0)
    journal.record(*message("A1"), T0)  # a duplicate of A1
    one, two = (journal.claim("d", 60, T0) for _ in range(2))
    assert one is not None
    assert two is not None
    journal.delivered(one.id, "d", T0)
    journal.failed(two.id, "d", "boom", None, T0)
    assert journal.redeliver_dead(T0) == 1
    assert journal.redeliver([one.id], T0) == [one.id]
    assert {s.id: (s.state, s.attempts) for s in journal.events("pending")} == {
        one.id: ("pending", 0),
        two.id: ("pending", 0),
    }
    assert journal.redeliver([one.id], T0) == []  # already pending: left as it is
    duplicate = journal.events("duplicate")[0].id
    with pytest.raises(KeyError) as caught:
        journal.redeliver([one.id, 424242, duplicate], T0)
    assert caught.value.args[0] == [424242, duplicate]


def test_purge_delivered(journal: Journal) -> None:
    journal.record(*message("A1", "A2"), T0)
    journal.record(*message("A1"), T0)  # duplicate of A1, goes with it
    claimed = journal.claim("d", 60, T0)
    assert claimed is not None
    journal.delivered(claimed.id, "d", T0)
    assert journal.purge_delivered(older_than=3600, now=T0 + 60) == 0
    assert journal.purge_delivered(older_than=3600, now=T0 + 3601) == 1
    assert [(s.event.assignment_id, s.state) for s in journal.events()] == [("A2", "pending")]
    assert query(journal.path, "SELECT COUNT(*) FROM messages") == (1,)


def test_unknown_state_is_refused(journal: Journal) -> None:
    with pytest.raises(ValueError, match="unknown state"):
        journal.events("lost")


def test_a_full_journal_raises_and_keeps_what_it_had(journal: Journal) -> None:
    journal.record(*message("A1"), T0)
    # SQLite's own page limit stands in for a full disk here; the gunicorn
    # tests put a journal on a real, tiny filesystem.
    journal._connection().execute("PRAGMA max_page_count = 1")
    big = amazon_envelope(events=[{**ACCEPTED_EVENT, "AssignmentId": "X" * 200_000}])
    with pytest.raises(JournalError, match="full"):
        journal.record(wire.parse_notify(big), Arrival(big), T0)
    assert [s.event.assignment_id for s in journal.events()] == ["A1"]


def test_an_unopenable_journal_says_where(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(tmp_path / "missing-dir" / "journal.db").open()


def _record_many(path: str, worker: int, count: int) -> None:
    journal = Journal(path)
    for n in range(count):
        journal.record(*message(f"W{worker}-{n}"))


def test_several_processes_share_one_journal(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    Journal(path).open()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(path, w, 40)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    stored = Journal(path).events("pending")
    assert len(stored) == 160
    assert len({s.event.assignment_id for s in stored}) == 160


def test_release_frees_only_the_dead_dispatchers_claims(journal: Journal) -> None:
    journal.record(*message("A1", "A2"), T0)
    mine = journal.claim("host:41:abcd", 60, T0)
    other = journal.claim("host:411:ef01", 60, T0)
    assert mine is not None
    assert other is not None
    assert journal.release("host:41:", "the dispatcher process died: killed by signal 9", T0) == 1
    retaken = journal.claim("host:99:0000", 60, T0)
    assert retaken is not None
    assert (retaken.id, retaken.attempts, retaken.last_error) == (
        mine.id,
        2,
        "the dispatcher process died: killed by signal 9",
    )
    assert journal.claim("host:99:0000", 60, T0) is None  # "host:411:" still holds its claim


def test_a_batch_is_filled_from_appended_messages_in_arrival_order(journal: Journal) -> None:
    # The receptor appends messages with their events unqueued; a dispatcher's
    # batch takes queued events first, then queues as many messages as it needs.
    journal.append_many([(*message(*[f"M{m}E{e}" for e in range(3)]), T0) for m in range(3)])
    _, first = journal.claim_batch("d", lease=60, limit=5, now=T0)
    assert [c.event.assignment_id for c in first] == ["M0E0", "M0E1", "M0E2", "M1E0", "M1E1"]
    assert query(journal.path, "SELECT COUNT(*) FROM messages WHERE events_queued = 0") == (1,)
    # Each claimed event is the row of that id, stored with the claim on it (and M1E2 without).
    with closing(sqlite3.connect(journal.path)) as conn:
        rows = conn.execute("SELECT id, message_id, assignment_id, lease_owner FROM events ORDER BY id").fetchall()
    assert rows[:5] == [(c.id, c.message_id, c.event.assignment_id, "d") for c in first]
    assert rows[5][2:] == ("M1E2", None)
    _, second = journal.claim_batch("d", lease=60, limit=10, now=T0)
    assert [c.event.assignment_id for c in second] == ["M1E2", "M2E0", "M2E1", "M2E2"]
    assert all(c.attempts == 0 for c in [*first, *second])  # counted with the outcome, not the claim
    _, none = journal.claim_batch("d", lease=60, limit=10, now=T0)
    assert none == []


def test_a_dispatcher_moves_spooled_messages_in_as_its_batches_need_them(journal: Journal) -> None:
    # The spool is as safe as the journal; a dispatcher that took every message in as it arrived spent
    # its turns and the disk on messages it would not hand on for a long while (issue 8).
    journal.append_many([(*message("M0"), T0), (*message("M1"), T0)])
    _, first = journal.claim_batch("d", lease=60, limit=1, now=T0)  # nothing read ahead: both taken in
    assert [c.event.assignment_id for c in first] == ["M0"]
    journal.append_many([(*message("M2"), T0 + 1)])
    _, second = journal.claim_batch("d", lease=60, limit=1, now=T0)
    assert [c.event.assignment_id for c in second] == ["M1"]
    assert query(journal.path, "SELECT COUNT(*) FROM messages") == (2,), "M1 filled the batch: M2 stays spooled"
    _, third = journal.claim_batch("d", lease=60, limit=1, now=T0)
    assert [c.event.assignment_id for c in third] == ["M2"]
    journal.append_many([(*message("M3"), T0 + 2), (*message("M4"), T0 + 2)])
    _, rest = journal.claim_batch("d", lease=60, limit=5, now=T0)
    assert [c.event.assignment_id for c in rest] == ["M3", "M4"], "a batch bigger than what is in: taken in"


def test_messages_queued_by_another_process_meanwhile_are_queued_once(tmp_path: Path) -> None:
    # A dispatcher reads the messages to queue before it takes the write lock;
    # if another process queued them in between, they are not queued again.
    path = tmp_path / "journal.db"
    dispatcher, reader = Journal(path).open(), Journal(path).open()
    dispatcher.append_many([(*message(f"M{m}"), T0) for m in range(4)])
    dispatcher.ingest()
    assert len(dispatcher._read_ahead(10)) == 4
    reader.queue_events(limit=2)  # e.g. an operator listing events
    _, claimed = dispatcher.claim_batch("d", lease=60, limit=10, now=T0)
    assert [c.event.assignment_id for c in claimed] == ["M0", "M1", "M2", "M3"]
    assert query(path, "SELECT COUNT(*), COUNT(DISTINCT assignment_id) FROM events") == (4, 4)
    assert dispatcher.counts() == {"pending": 4, "delivered": 0, "dead": 0, "duplicate": 0}


def test_counts_are_one_snapshot_while_a_dispatcher_queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pytest plugin's wait_for_delivery trusts pending=0 to mean nothing is
    # left to deliver: a dispatcher queueing events between two reads of one
    # count must not make them vanish from it. Here it queues right after each read.
    path = tmp_path / "journal.db"
    counter, dispatcher = Journal(path).open(), Journal(path).open()
    counter.append_many([(*message("M0", "M1"), T0)])
    read = counter._read

    def read_then_queue(sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
        rows = read(sql, parameters)
        dispatcher.queue_events()
        return rows

    monkeypatch.setattr(counter, "_read", read_then_queue)
    assert counter.counts() == {"pending": 2, "delivered": 0, "dead": 0, "duplicate": 0}


def test_a_batch_claims_only_new_events_of_messages_with_duplicates(journal: Journal) -> None:
    # Events repeated within a message, and a replayed message, go through
    # the event-by-event path: only the new events are claimed.
    repeated = message("A", "A", "B")
    journal.append_many([(*repeated, T0), (*repeated, T0), (*message("C"), T0)])
    _, claimed = journal.claim_batch("d", lease=60, limit=10, now=T0)
    assert [c.event.assignment_id for c in claimed] == ["A", "B", "C"]
    with closing(sqlite3.connect(journal.path)) as conn:
        rows = conn.execute("SELECT id, assignment_id, state, lease_owner FROM events ORDER BY id").fetchall()
    assert [(state, owner) for _, _, state, owner in rows] == [
        ("pending", "d"), ("duplicate", None), ("pending", "d"),  # the first message
        ("duplicate", None), ("duplicate", None), ("duplicate", None),  # its replay
        ("pending", "d"),
    ]  # fmt: skip
    assert [c.id for c in claimed] == [rows[0][0], rows[2][0], rows[6][0]]
