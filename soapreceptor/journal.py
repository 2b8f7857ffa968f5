"""The journal: every accepted notification, stored durably before the receptor answers.

MTurk sends each notification once and never retries, so once the receptor
has answered 200 the journal holds the only copy of those events. It is an
SQLite file shared by every gunicorn worker and every dispatcher on the host,
with a spool beside it (``<journal>-spool/``, :mod:`soapreceptor.spool`).

The answer path (:meth:`Journal.append_many`): a worker appends the message
to a spool segment of its own and syncs it before answering; messages that
arrive while a sync is under way share the next one (:mod:`soapreceptor.group_commit`).
No worker waits for another writer: SQLite lets one writer in at a time, and
when the workers committed there each answer waited for the other workers'
commits and for the dispatcher's. The dispatcher (as its batches need them:
:meth:`Journal.claim_batch`) or any reader (all of them) then moves spooled
messages into SQLite (:meth:`Journal.ingest`), in arrival order and exactly
once, and queues their events (:meth:`Journal.queue_events`).

Durability: WAL mode with ``synchronous=FULL``. In WAL mode ``FULL`` syncs the
write-ahead log at every commit, so a transaction that has committed survives
a crash of the process *and* a power loss; ``NORMAL`` (the usual WAL setting)
may lose the last commits on power loss, which here would be events already
answered 200. An ingest commits that way whoever makes it, and only then is a
segment taken whole deleted: a message is always on disk in one place or the
other.

The dispatcher's own writes (claims and outcomes) need no fsync of their
own (``durable=False``): losing the last of them to a power cut only means
an event is handed on again, which at-least-once delivery allows; and the
next durable commit syncs the write-ahead log with them in it anyway.

Each event row moves through ``pending`` -> ``delivered`` or ``dead``; an event
that arrived before (a replayed message, or the same event in another message)
is stored as ``duplicate``, pointing at the original, and never handed on.
A dispatcher *claims* a pending event with a lease; if it dies, the lease
expires and another dispatcher takes the event again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import heapq
import json
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string  # json.dumps's escaping of a str
from pathlib import Path
from typing import Final

from . import progress
from .errors import SoapreceptorError
from .model import Event, Notification
from .spool import READ_BYTES, Record, Salvaged, Segment, Spool, SpoolError

_logger = logging.getLogger("soapreceptor.journal")

STATES: Final[tuple[str, ...]] = ("pending", "delivered", "dead", "duplicate")

_SCHEMA: Final[str] = """
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY,
    received_at     REAL    NOT NULL,
    request_id      TEXT,
    remote_addr     TEXT,
    soap_action     TEXT,
    version         TEXT    NOT NULL,
    version_source  TEXT    NOT NULL,
    timestamp       TEXT    NOT NULL,
    signature       TEXT,
    body            BLOB    NOT NULL,
    body_sha256     TEXT    NOT NULL,
    event_count     INTEGER NOT NULL,
    duplicate_of    INTEGER REFERENCES messages(id),
    -- 0: the message's events are only in ``events`` (JSON), not yet in the
    -- events table; the dispatcher queues them (Journal.queue_events).
    events_queued   INTEGER NOT NULL DEFAULT 1,
    events          TEXT
);

CREATE TABLE IF NOT EXISTS events (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL REFERENCES messages(id),
    seq             INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    event_time      TEXT,
    hit_type_id     TEXT,
    hit_id          TEXT,
    assignment_id   TEXT,
    version         TEXT    NOT NULL,
    dedup_key       TEXT,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'duplicate')),
    duplicate_of    INTEGER REFERENCES events(id),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    lease_owner     TEXT,
    lease_expires   REAL,
    last_error      TEXT,
    updated_at      REAL    NOT NULL
);

-- How far into each spool segment the journal has taken its records (Journal.ingest).
CREATE TABLE IF NOT EXISTS spool_segments (
    name            TEXT    PRIMARY KEY,
    offset          INTEGER NOT NULL
);

-- Each dispatcher says it is alive here every few seconds (for /readyz).
CREATE TABLE IF NOT EXISTS dispatchers (
    owner           TEXT    PRIMARY KEY,
    beat_at         REAL    NOT NULL
);
"""

#: Columns added since the first journals; an older journal gets them when opened.
_ADDED_COLUMNS: Final[dict[str, dict[str, str]]] = {
    "messages": {"events_queued": "INTEGER NOT NULL DEFAULT 1", "events": "TEXT"},
}

_INDEXES: Final[str] = """
CREATE INDEX IF NOT EXISTS messages_by_body ON messages(body_sha256);
-- Messages whose events wait to be queued, in arrival order.
CREATE INDEX IF NOT EXISTS messages_unqueued ON messages(id) WHERE events_queued = 0;
-- The dispatcher's queue: pending events in arrival order (a claim reads it
-- through this index, never sorting the backlog; the index stays as small as
-- the backlog).
CREATE INDEX IF NOT EXISTS events_pending ON events(id) WHERE state = 'pending';
DROP INDEX IF EXISTS events_due;
-- At most one stored copy of each identifiable event: the rest are duplicates.
CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events(dedup_key) WHERE state != 'duplicate';
"""


_APPEND_MESSAGE: Final[str] = (
    "INSERT INTO messages (id, received_at, request_id, remote_addr, soap_action, version, version_source,"
    " timestamp, signature, body, body_sha256, event_count, events, events_queued)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
)
_SET_SEGMENT_OFFSET: Final[str] = (
    "INSERT INTO spool_segments (name, offset) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET offset = excluded.offset"
)
_INSERT_EVENT: Final[str] = (
    "INSERT INTO events (message_id, seq, event_type, event_time, hit_type_id, hit_id, assignment_id,"
    " version, dedup_key, state, duplicate_of, next_attempt_at, updated_at, lease_owner, lease_expires)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: The events column's encoder, made once (json.dumps with separators makes one per call); an
#: event's time (a datetime, see _message_meta) as its isoformat() text, anything else a TypeError.
#: Not orjson, unlike the spool: the column's text stays as every journal before has it (ASCII escapes).
_COMPACT_JSON: Final[json.JSONEncoder] = json.JSONEncoder(separators=(",", ":"), default=dt.datetime.isoformat)
#: How often a writer waiting for the writer lock looks again: from 50 µs, doubling to 0.2 ms (a longer
#: nap leaves the journal idle: the holder needs it for a few hundred microseconds at most).
_LOCK_POLL_MIN: Final[float] = 0.00005
_LOCK_POLL_MAX: Final[float] = 0.0002
#: Every writer's checkpoint threshold (pages of 4 KiB), reached only when no dispatcher checkpoints.
_BACKSTOP_CHECKPOINT_PAGES: Final[int] = 10000
#: Messages whose events a dispatcher queues in one turn, when its queue has run dry.
_QUEUE_PER_TURN: Final[int] = 4
#: Messages a dispatcher reads, before taking the write lock, to queue as many events as its batch takes.
_READ_AHEAD: Final[int] = 16
#: Keys looked up per query (SQLite allows 32766 parameters; a 1 MB message may carry thousands of events).
_KEYS_PER_QUERY: Final[int] = 500


class JournalError(SoapreceptorError):
    """The journal could not do what was asked (unwritable, full, locked too long, corrupt)."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """How a message arrived, kept beside it."""

    body: bytes
    request_id: str | None = None
    remote_addr: str | None = None
    soap_action: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :meth:`Journal.record` stored."""

    message_id: int
    pending: int
    duplicates: int
    duplicate_message: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt at a claimed event ended: ``delivered``, ``pending`` again at ``retry_at``, or ``dead``.

    ``count`` adds the attempt to the event's count now (events claimed with
    :meth:`Journal.claim_batch`, whose attempts are not counted when claimed).
    """

    event_id: int
    state: str
    error: str | None = None
    retry_at: float | None = None
    count: bool = False


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event row, as operators and the dispatcher see it."""

    id: int
    message_id: int
    event: Event
    state: str
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    duplicate_of: int | None
    updated_at: float


def dedup_key(event: Event) -> str | None:
    """What identifies an event across messages, or None if it cannot be identified.

    (EventType, HITId, AssignmentId, EventTime): an event without an
    EventTime (a bare Ping) has nothing that tells two of them apart, so it
    is never taken for a duplicate.
    """
    if event.event_time is None:
        return None
    return _key(event.event_type, event.hit_id, event.assignment_id, event.event_time.isoformat())


def _key(event_type: str, hit_id: str | None, assignment_id: str | None, event_time: str) -> str:
    """:func:`dedup_key` from the fields as stored (``event_time`` in ISO format): what ``json.dumps`` of them gives.

    Built from the strings directly, with the JSON encoder's own string
    escaping: the keys of every journal ever written must stay the same.
    """
    return (
        f"[{_json_value(event_type)}, {_json_value(hit_id)}, {_json_value(assignment_id)}, {_json_value(event_time)}]"
    )


def _json_value(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


class Journal:
    """An SQLite journal at ``path``; safe to share between processes (open one per process).

    ``busy_timeout`` bounds how long a write waits for another writer's lock
    before giving up with :class:`JournalError`. ``durable=False`` commits
    without waiting for the disk (``synchronous=NORMAL``): only for writers
    whose commits may be lost on power failure without losing an event (the
    dispatcher's); the receptor's must always be durable.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0, durable: bool = True) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.durable = durable
        #: Where the receptor's workers store accepted messages first (see :mod:`soapreceptor.spool`).
        self.spool = Spool(f"{self.path}-spool")
        #: Each segment's offset as this process last ingested it: nothing new, no need to take the journal.
        self._ingested: dict[str, int] = {}
        self._local = threading.local()
        # Every connection this object opened, with the process that opened it:
        # closed with the journal, but only in that process (a connection
        # inherited through fork must never be touched by the child).
        self._opened: list[tuple[int, sqlite3.Connection]] = []
        self._opened_fds: list[tuple[int, int]] = []
        self._thread_lock = threading.Lock()
        self._lock_owner = 0
        self._lock_file = -1
        #: Whether this process's last write had to wait for another writer: the journal is busy;
        #: and how long (seconds) it then held the journal.
        self.contended = False
        self.held = 0.0
        #: Messages a dispatcher read to queue but has not queued yet (see claim_batch).
        self._ahead: list[_Unqueued] = []
        weakref.finalize(self, _close_own, self._opened, self._opened_fds)

    def __repr__(self) -> str:
        return f"<Journal {self.path}>"

    # -- connection -----------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        # One connection per process and thread: SQLite connections must not
        # cross a fork (gunicorn forks workers after the app is loaded).
        owner = (os.getpid(), threading.get_ident())
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "owner", None) != owner:
            conn = self._open()
            self._opened.append((os.getpid(), conn))
            self._local.conn, self._local.owner = conn, owner
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            # check_same_thread=False only so that close() may run in another
            # thread (a finalizer); each connection is used by one thread.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"the journal {self.path} cannot use WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
            # Checkpoints (copying the write-ahead log into the database) take
            # milliseconds: the dispatcher makes them (checkpoint()) between its
            # transactions, holding no lock anyone waits for. A commit of any
            # writer makes one only as a backstop, when no dispatcher has for a
            # long while (a 40 MB log): made inside a commit, a checkpoint keeps
            # the journal locked, and the receptor's answers wait.
            conn.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_CHECKPOINT_PAGES}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for name, definition in columns.items():
                    if name not in present:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
            conn.executescript(_INDEXES)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        return conn

    def open(self) -> Journal:
        """Open (creating if needed) and check the journal now; raise :class:`JournalError` if unusable."""
        self._connection()
        return self

    def close(self) -> None:
        """Close the connections this process opened, and leave its spool segment; the journal reopens on next use."""
        self.spool.close()
        _close_own(self._opened, self._opened_fds)
        self._local.conn = None
        self._lock_owner = 0

    @contextmanager
    def _write(self, *, synced: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (BEGIN IMMEDIATE), after the journal's writer lock.

        ``synced``: the commit is durable even on a journal opened with ``durable=False``.
        """
        conn = self._connection()
        lowered = synced and not self.durable
        with self._writer_lock():
            try:
                if lowered:
                    conn.execute("PRAGMA synchronous = FULL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise JournalError(f"the journal {self.path} could not commit: {exc}") from exc
            finally:
                if lowered:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """Queue for the journal with the other writers on this host, to be woken the moment it is free.

        SQLite's own wait for a busy journal sleeps 1, 2, 5, 10... ms between
        tries, so two busy workers and a dispatcher spend much of their time
        asleep with the journal free. Every writer of this package first takes
        an ``flock`` on ``<journal>-writer.lock`` (polled at a fine grain),
        then a write transaction that is then nearly always free at once.
        Writers that do not take it (the ``sqlite3`` shell) are still kept
        out by SQLite's own locking, as before.
        """
        with self._thread_lock:
            fd = self._lock_fd()
            deadline = time.monotonic() + self.busy_timeout
            pause = _LOCK_POLL_MIN
            self.contended = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self.contended = True
                    if time.monotonic() > deadline:
                        raise JournalError(
                            f"the journal {self.path} has been locked by another writer for over "
                            f"{self.busy_timeout:g} s"
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, _LOCK_POLL_MAX)
            taken = time.monotonic()
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                self.held = time.monotonic() - taken

    def _lock_fd(self) -> int:
        # One open file per process: flock belongs to the open file, which a
        # forked child would otherwise share with its parent (and so its lock).
        pid = os.getpid()
        if self._lock_owner != pid:
            try:
                self._lock_file = os.open(f"{self.path}-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise JournalError(f"cannot open the journal's lock file: {exc}") from exc
            self._lock_owner = pid
            self._opened_fds.append((pid, self._lock_file))
        return self._lock_file

    def _read(self, sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
        conn = self._connection()
        try:
            cursor = conn.execute(sql, parameters)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())
        except sqlite3.Error as exc:
            raise JournalError(f"the journal {self.path} could not be read: {exc}") from exc

    # -- the receptor's side ----------------------------------------------------

    def append_many(self, messages: Sequence[tuple[Notification, Arrival, float]]) -> None:
        """Store notifications durably, each with its arrival time: the receptor's path.

        They are in this process's spool segment, synced, when this returns
        (so each message, with all its events, is safe before its answer goes
        out), without waiting for any other writer. They reach the journal
        itself when the dispatcher (or any reader) next calls :meth:`ingest`,
        and their events its queue after that (:meth:`queue_events`), off
        the answer path.
        """
        records = [_spooled(notification, arrival, now) for notification, arrival, now in messages]
        try:
            self.spool.append(records)
        except SpoolError as exc:
            raise JournalError(f"the journal could not store the messages: {exc}") from exc

    def ingest(self, *, everything: bool = False) -> int:
        """Move the messages spooled by the receptor's workers into the journal, in arrival order; how many.

        One call takes at most about :data:`~soapreceptor.spool.READ_BYTES`
        of each segment (a turn of the dispatcher, not a whole backlog in one
        transaction); with ``everything``, it goes on until every message
        spooled before the call is in (what a reader needs to see).

        In one synced transaction, whoever ingests: the messages, and how far
        into each segment they were taken, so that none is ever taken twice
        or left out whenever a process dies or the power goes. (Unsynced, on
        the dispatcher's journal, measured worse: the checkpoints then sync
        more at once, and the workers' syncs wait behind them.) Segments
        taken whole whose writer has left them are then deleted; a sealed
        segment that holds bytes that are not a whole record is set aside (in
        ``damaged/``) for a person to look at, and logged, once every whole
        record in it, before the damage and after it, is in the journal. A
        whole record that is not a message is passed over (:meth:`_pass_over`).
        Raises :class:`JournalError` if the journal or the spool fails.
        """
        try:
            if not everything:
                return self._ingest_some()
            # Each turn takes up to READ_BYTES more of every segment that has more, so
            # the largest segment present now bounds the turns; later appends may wait.
            largest = max((segment.size for segment in self.spool.segments()), default=0)
            taken = 0
            for _ in range(largest // READ_BYTES + 1):
                took = self._ingest_some()
                taken += took
                if not took:
                    break
            return taken
        except SpoolError as exc:
            raise JournalError(f"the journal could not take in its spool: {exc}") from exc

    def _ingest_some(self) -> int:
        """One turn of :meth:`ingest`: how many messages it took (salvaged ones included: _set_aside)."""
        segments = self.spool.segments()
        if not self._spool_changed(segments):
            # Nothing new: only segments taken whole may go, if their writers have left them.
            return self._tidy_spool(segments, self._ingested)
        with self._write(synced=True) as conn:
            segments = self.spool.segments()
            offsets = {str(name): int(at) for name, at in conn.execute("SELECT name, offset FROM spool_segments")}
            taken: list[list[tuple[float, int, tuple[object, ...]]]] = []
            reached: dict[str, int] = {}
            for number, segment in enumerate(segments):
                start = offsets.get(segment.name, 0)
                if start == _FINISHED or not self.spool.has_more(segment, start):
                    continue
                rows = []
                at = start
                for record, end in self.spool.read(segment, start).records:
                    try:
                        received_at, row = _unspooled(record)
                    except JournalError as exc:
                        self._pass_over(segment, at, exc)
                    else:
                        rows.append((received_at, number, row))
                    at = start + end
                if at != start:  # else nothing whole yet (a record being written): no offset to store
                    reached[segment.name] = at
                taken.append(rows)
            # Each segment in its own order, the segments interleaved by arrival time.
            merged = list(heapq.merge(*taken, key=lambda item: (item[0], item[1])))
            if merged:
                self._append(conn, [row for _, _, row in merged])
            if reached:
                conn.executemany(_SET_SEGMENT_OFFSET, list(reached.items()))
                offsets.update(reached)
            # Progress kept for segments that are gone is of no more use (they are never re-created).
            present = {segment.name for segment in segments}
            gone = [name for name in offsets if name not in present]
            conn.executemany("DELETE FROM spool_segments WHERE name = ?", [(name,) for name in gone])
        self._ingested = {segment.name: offsets.get(segment.name, 0) for segment in segments}
        return len(merged) + self._tidy_spool(segments, offsets)

    def _pass_over(self, segment: Segment, at: int, why: JournalError) -> None:
        """Keep ``segment`` for a person, as it holds a record at ``at`` that is not a message (:func:`_unspooled`).

        The ingest then goes on past that record, in the transaction that
        called this: one record this release cannot read (a later release's,
        read after a downgrade; or a bug's) must not hold up every message
        accepted after it. It is whole (its checksum holds), so where it ends
        is known, as it is not for damage; and the copy kept holds it as it
        was, for the release that can read it.
        """
        kept = self.spool.keep(segment)
        _logger.error(
            "spool segment %s holds a record at offset %d that is not a message this release can read (%s):"
            " passed over, and the segment kept as %s; the messages around it are taken as usual",
            segment.name,
            at,
            why,
            kept,
        )

    def _spool_changed(self, segments: list[Segment]) -> bool:
        """Whether ``segments`` may hold something to ingest since this process last looked."""
        for segment in segments:
            at = self._ingested.get(segment.name)
            if at is None or (at != _FINISHED and self.spool.has_more(segment, at)):
                return True
        return False

    def _tidy_spool(self, segments: list[Segment], offsets: dict[str, int]) -> int:
        """Delete the segments taken whole whose writer has left them, and set aside damaged ones.

        How many messages were salvaged from the damaged ones (:meth:`_set_aside`).
        """
        salvaged_messages = 0
        for segment in segments:
            at = offsets.get(segment.name, 0)
            finished = at == _FINISHED
            with self.spool.sealed(segment) as sealed:
                if not sealed:
                    continue
                try:
                    if not finished:
                        rest = self.spool.read(segment, at)  # final now: nobody may write to it any more
                        if rest.records:
                            continue  # for the next ingest
                        if rest.rest:  # damage, or zeros: either may hide whole records after it
                            salvaged = self.spool.salvage_from(segment, at)
                            if salvaged.records or rest.rest != "unwritten":
                                salvaged_messages += self._set_aside(segment, at, rest.rest, salvaged)
                                continue
                        # Marked finished in a synced commit, then deleted: were it to come back after a
                        # power loss (its deletion not yet on disk), it would not be taken again.
                        with self._write(synced=True) as conn:
                            conn.execute(_SET_SEGMENT_OFFSET, (segment.name, _FINISHED))
                    self.spool.remove(segment)
                    self._ingested.pop(segment.name, None)
                except FileNotFoundError:
                    self._ingested.pop(segment.name, None)  # another ingester tidied it
                except (OSError, JournalError) as exc:
                    _logger.error("could not tidy the spool segment %s: %s", segment.path, exc)
        self.spool.remove_stale_creations()
        return salvaged_messages

    def _set_aside(self, segment: Segment, at: int, why: str, salvaged: Salvaged) -> int:
        """Take the whole records past the damage at ``at`` (:func:`~soapreceptor.spool.salvage`); set it aside.

        In this order: the segment is kept in ``damaged/`` as it is, then the
        messages salvaged are committed with the segment's new offset, then
        it leaves the spool. Were the process to die after the first step,
        the next ingester does it all again (keeping it again costs nothing);
        after the second, it takes the segment up again past the records
        salvaged, finds nothing more and deletes it. No message is lost or
        taken twice, and the segment as it was stays for a person to look at.
        How many messages this took.
        """
        rows: list[tuple[object, ...]] = []
        unreadable = 0
        for record, _end in salvaged.records:
            try:
                rows.append(_unspooled(record)[1])
            except JournalError:
                unreadable += 1  # kept in the copy, as _pass_over keeps one
        aside = self.spool.keep(segment)
        if salvaged.records:
            with self._write(synced=True) as conn:
                stored = conn.execute("SELECT offset FROM spool_segments WHERE name = ?", (segment.name,)).fetchone()
                now_at = int(stored[0]) if stored else 0
                if now_at != at:
                    # ``at`` came from this process's last look, and another ingester has salvaged them
                    # since (and died before removing the segment): the next turn goes on from there.
                    self._ingested[segment.name] = now_at
                    return 0
                if rows:
                    self._append(conn, rows)
                conn.execute(_SET_SEGMENT_OFFSET, (segment.name, at + salvaged.records[-1][1]))
        self.spool.remove(segment)
        found = len(rows)
        after = (
            f"and so {'is the whole record' if found == 1 else f'are the {found} whole records'} found after them"
            f" ({salvaged.skipped} bytes passed over)"
            if found
            else f"and no {'message' if unreadable else 'whole record'} follows them"
        )
        if unreadable:
            after += (
                f"; {unreadable} whole record{'s' if unreadable > 1 else ''} after them"
                f" {'are' if unreadable > 1 else 'is'} not a message this release can read"
            )
        _logger.error(
            "spool segment %s holds bytes that are not a whole record (%s) from offset %d on:"
            " set aside as %s; every record before them is in the journal, %s",
            segment.name,
            _DAMAGE.get(why, why),
            at,
            aside,
            after,
        )
        self._ingested.pop(segment.name, None)
        return found

    def record(self, notification: Notification, arrival: Arrival, now: float | None = None) -> Recorded:
        """Store a notification durably and queue its events at once; what was stored.

        The same message (byte for byte) stored before makes every event of
        this one a duplicate; an event seen before in another message is a
        duplicate on its own.
        """
        return self.record_many([(notification, arrival, time.time() if now is None else now)])[0]

    def record_many(self, messages: Sequence[tuple[Notification, Arrival, float]]) -> list[Recorded]:
        """Store these messages in the journal itself and queue their events, in one transaction.

        Not the receptor's path (that is :meth:`append_many`): for tools that
        store messages and want to know at once what became of them. The
        messages spooled before these are ingested and judged first.
        """
        rows = [_message_row(notification, arrival, now) for notification, arrival, now in messages]
        self.ingest(everything=True)
        with self._write() as conn:
            self._queue(conn, None)  # messages appended before these are judged first
            self._append(conn, rows)
            return self._queue(conn, None)

    @staticmethod
    def _append(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> list[int]:
        """Insert message rows (from :func:`_message_row`) under the write lock; their ids."""
        first = (conn.execute("SELECT MAX(id) FROM messages").fetchone()[0] or 0) + 1
        conn.executemany(_APPEND_MESSAGE, [(first + n, *row) for n, row in enumerate(rows)])
        return list(range(first, first + len(rows)))

    def queue_events(self, limit: int | None = None) -> list[Recorded]:
        """Put the events of appended messages (up to ``limit`` messages, oldest first) in the dispatcher's queue.

        Each event becomes ``pending``, or ``duplicate`` if it arrived before
        (in a byte-identical message, or on its own in another message),
        exactly as if it had been judged on arrival: messages are taken in
        arrival order. Messages still in the spool are ingested first.
        Returns what was stored for each message queued.
        """
        # All of it only for a reader (no limit): the dispatcher takes turns of a size.
        self.ingest(everything=limit is None)
        with self._write() as conn:
            return self._queue(conn, limit)

    def _queue(
        self,
        conn: sqlite3.Connection,
        limit: int | None,
        prepared: list[_Unqueued] | None = None,
        claim: _Claim | None = None,
    ) -> list[Recorded]:
        """Queue the events of the oldest appended messages (``limit``), or of ``prepared`` (read before the lock).

        Messages read before the write lock was taken may have been queued
        meanwhile by another dispatcher: those are left out. The rest are
        still the oldest unqueued messages (appends only add newer ones).
        With ``claim``, the first new pending events are stored claimed (see :class:`_Claim`).
        """
        if prepared is None:
            prepared = _read_unqueued(conn, limit)
        elif prepared:
            ids = [message.message_id for message in prepared]
            still = {
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM messages WHERE events_queued = 0 AND id IN ({', '.join('?' * len(ids))})",  # noqa: S608 (placeholders only)
                    ids,
                )
            }
            prepared = [message for message in prepared if message.message_id in still]
        queued = []
        for message in prepared:
            original = conn.execute(
                "SELECT id FROM messages WHERE body_sha256 = ? AND duplicate_of IS NULL AND id < ? ORDER BY id LIMIT 1",
                (message.digest, message.message_id),
            ).fetchone()
            original_id = original[0] if original else None
            originals = self._insert_events(conn, message, original_id, claim)
            # The JSON copy has done its job: the events table holds them now (and the body, always).
            conn.execute(
                "UPDATE messages SET events_queued = 1, events = NULL, duplicate_of = ? WHERE id = ?",
                (original_id, message.message_id),
            )
            duplicates = sum(duplicate_of is not None for duplicate_of in originals)
            queued.append(
                Recorded(message.message_id, len(originals) - duplicates, duplicates, original_id is not None)
            )
        if queued:
            from . import metrics  # noqa: PLC0415 (metrics reads the journal: imported when first needed)

            metrics.get().events_journaled.inc(sum(r.pending for r in queued))
            metrics.get().duplicates.inc(sum(r.duplicates for r in queued))
        return queued

    def _insert_events(
        self, conn: sqlite3.Connection, message: _Unqueued, original_id: int | None, claim: _Claim | None
    ) -> list[int | None]:
        """Insert a message's event rows; for each, the event it duplicates (None: a new, pending event)."""
        keys = message.keys
        if original_id is None and message.distinct:
            # The common case, a new message whose events all differ: all its
            # keys looked up at once, all its rows inserted in one call.
            seen = self._stored_keys(conn, [key for key in keys if key is not None])
            originals = [None if key is None else seen.get(key) for key in keys]
            if any(original is not None for original in originals):
                rows = _event_rows(message.message_id, message.events, keys, originals, now=message.received_at)
            else:
                rows = message.rows  # made before the lock was taken
            if claim is None or claim.room <= 0:
                conn.executemany(_INSERT_EVENT, rows)
            else:
                claimed = [seq for seq, original in enumerate(originals) if original is None][: claim.room]
                leased = set(claimed)
                conn.executemany(
                    _INSERT_EVENT, [claim.leased(row) if seq in leased else row for seq, row in enumerate(rows)]
                )
                # Rows get consecutive ids, in order: the last one inserted tells them all.
                first = _last_insert_id(conn) - len(rows) + 1
                claim.took(message, [(first + seq, seq) for seq in claimed])
            return originals
        # A replayed message, or one repeating an event: each event is judged
        # against the rows inserted just before it.
        originals = []
        for seq, (event, key) in enumerate(zip(message.events, keys, strict=True)):
            duplicate_of = self._original_event(conn, original_id, seq, key)
            (row,) = _event_rows(message.message_id, [event], [key], [duplicate_of], now=message.received_at, first=seq)
            if claim is not None and claim.room > 0 and duplicate_of is None:
                conn.execute(_INSERT_EVENT, claim.leased(row))
                claim.took(message, [(_last_insert_id(conn), seq)])
            else:
                conn.execute(_INSERT_EVENT, row)
            originals.append(duplicate_of)
        return originals

    @staticmethod
    def _stored_keys(conn: sqlite3.Connection, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start : start + _KEYS_PER_QUERY]
            found.update(
                conn.execute(
                    f"SELECT dedup_key, id FROM events WHERE state != 'duplicate'"  # noqa: S608 (only placeholders)
                    f" AND dedup_key IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
            )
        return found

    @staticmethod
    def _original_event(
        conn: sqlite3.Connection, original_message: int | None, seq: int, key: str | None
    ) -> int | None:
        if original_message is not None:
            row = conn.execute(
                "SELECT COALESCE(duplicate_of, id) FROM events WHERE message_id = ? AND seq = ?",
                (original_message, seq),
            ).fetchone()
            if row is not None:
                return int(row[0])
        if key is not None:
            row = conn.execute("SELECT id FROM events WHERE dedup_key = ? AND state != 'duplicate'", (key,)).fetchone()
            if row is not None:
                return int(row[0])
        return None

    # -- the dispatcher's side --------------------------------------------------

    def claim(self, owner: str, lease: float, now: float | None = None) -> StoredEvent | None:
        """Claim the oldest due pending event for ``lease`` seconds, counting an attempt; None if none is due."""
        now = time.time() if now is None else now
        self.ingest()
        with self._write() as conn:
            claimed, _ = self._claim(conn, owner, lease, 1, now, count=True)
        return _claimed(claimed[0], now) if claimed else None

    def claim_batch(
        self, owner: str, lease: float, limit: int, outcomes: Sequence[Outcome] = (), now: float | None = None
    ) -> tuple[list[int], list[StoredEvent]]:
        """Record ``outcomes`` and claim up to ``limit`` due events in arrival order, in one transaction.

        The dispatcher's turn: one commit per batch of events rather than two
        per event. An attempt is counted when its outcome is recorded (see
        :class:`Outcome`), not here: the events of a batch that a dispatcher
        never got to are not charged one. (An event whose lease ran out, its
        dispatcher gone without a word, is charged one here.) Returns the ids
        whose lease ``owner`` had lost (see :meth:`settle`) and the claimed events.

        Messages still in the spool are ingested (:meth:`ingest`) only when
        those already in the journal and not yet queued hold fewer than
        ``limit`` events. The receptor's workers wait for the journal while
        this transaction holds it, so what can be worked out before (reading
        the messages to queue, building their rows) or after (the claimed
        events) is.
        """
        now = time.time() if now is None else now
        ahead = self._read_ahead(limit)
        if sum(len(message.events) for message in ahead) < limit:
            # Spooled messages are moved in as the batches need them, not as they
            # arrive (they are as safe in the spool): under load that keeps this
            # process's synced writes, which the workers' syncs queue behind, and
            # its share of the CPU to what it hands on.
            self.ingest()
            ahead = self._read_ahead(limit)
        with self._write() as conn:
            lost = self._settle(conn, owner, outcomes, now)
            claimed, taken = self._claim(conn, owner, lease, limit, now, count=False, ahead=ahead)
        # Committed: the messages this turn queued (or found queued by another dispatcher) are not read again.
        del self._ahead[:taken]
        return lost, [_claimed(row, now) for row in claimed]

    def _read_ahead(self, events: int) -> list[_Unqueued]:
        """The oldest appended messages, holding ``events`` events or more where there are that many.

        Read and worked out without the write lock; those not queued this
        turn are kept for the next rather than read again.
        """
        have = sum(len(message.events) for message in self._ahead)
        while have < events:
            after = self._ahead[-1].message_id if self._ahead else 0
            try:
                more = _read_unqueued(self._connection(), max(_READ_AHEAD, events - have), after=after)
            except sqlite3.Error as exc:
                raise JournalError(f"the journal {self.path} could not be read: {exc}") from exc
            if not more:
                break
            self._ahead += more
            have += sum(len(message.events) for message in more)
        return self._ahead

    def _claim(
        self,
        conn: sqlite3.Connection,
        owner: str,
        lease: float,
        limit: int,
        now: float,
        *,
        count: bool,
        ahead: list[_Unqueued] | None = None,
    ) -> tuple[list[tuple[sqlite3.Row, int] | StoredEvent], int]:
        """Claim due events: each a row with the attempts it has now (see :func:`_claimed`), or a new event.

        Also returns how many of the messages in ``ahead`` it took to queue.

        With ``ahead`` (messages read before the lock), a batch that the
        queue cannot fill is filled by queueing the events of as many of
        them as it takes. Without, events of appended messages join the
        queue only when it has run dry, a few messages at a time. Either way
        every event is claimed in arrival order: queued ones are always older.
        """
        rows = self._due(conn, now, limit)
        fresh: list[StoredEvent] = []
        needed = 0
        if ahead is not None:
            wanted, taken = limit - len(rows), 0
            for message in ahead:
                if taken >= wanted:
                    break
                taken, needed = taken + len(message.events), needed + 1
            if needed:
                # The new events are stored claimed: no second write to claim them.
                claim = _Claim((owner, now + lease), wanted, now)
                self._queue(conn, None, ahead[:needed], claim)
                fresh = claim.events
        elif not rows and self._queue(conn, _QUEUE_PER_TURN):
            rows = self._due(conn, now, limit)
        charged = [row["attempts"] + (1 if count or row["lease_owner"] is not None else 0) for row in rows]
        conn.executemany(
            "UPDATE events SET lease_owner = ?, lease_expires = ?, attempts = ?, updated_at = ? WHERE id = ?",
            [(owner, now + lease, attempts, now, row["id"]) for row, attempts in zip(rows, charged, strict=True)],
        )
        return [*zip(rows, charged, strict=True), *fresh], needed

    def delivered(self, event_id: int, owner: str, now: float | None = None) -> bool:
        """Mark a claimed event delivered; False if ``owner`` no longer held its lease."""
        return not self.settle(owner, [Outcome(event_id, "delivered")], now)

    def failed(self, event_id: int, owner: str, error: str, retry_at: float | None, now: float | None = None) -> bool:
        """Record a failed attempt: pending again at ``retry_at``, or dead when it is None."""
        state = "dead" if retry_at is None else "pending"
        return not self.settle(owner, [Outcome(event_id, state, error, retry_at)], now)

    def settle(self, owner: str, outcomes: Sequence[Outcome], now: float | None = None) -> list[int]:
        """Record the outcomes of claimed events in one transaction; the ids whose lease ``owner`` had lost."""
        now = time.time() if now is None else now
        with self._write() as conn:
            return self._settle(conn, owner, outcomes, now)

    @staticmethod
    def _due(conn: sqlite3.Connection, now: float, limit: int) -> list[sqlite3.Row]:
        cursor = conn.execute(
            "SELECT * FROM events INDEXED BY events_pending WHERE state = 'pending' AND next_attempt_at <= ?"
            " AND (lease_expires IS NULL OR lease_expires < ?) ORDER BY id LIMIT ?",
            (now, now, limit),
        )
        cursor.row_factory = sqlite3.Row
        return list(cursor.fetchall())

    @staticmethod
    def _settle(conn: sqlite3.Connection, owner: str, outcomes: Sequence[Outcome], now: float) -> list[int]:
        if not outcomes:
            return []
        ids = [outcome.event_id for outcome in outcomes]
        held = {
            row[0]
            for row in conn.execute(
                f"SELECT id FROM events WHERE id IN ({', '.join('?' * len(ids))})"  # noqa: S608 (placeholders only)
                " AND lease_owner = ? AND state = 'pending'",
                [*ids, owner],
            )
        }
        conn.executemany(
            "UPDATE events SET state = ?, last_error = COALESCE(?, last_error), next_attempt_at = ?,"
            " lease_owner = NULL, lease_expires = NULL, attempts = attempts + ?, updated_at = ? WHERE id = ?",
            [
                (outcome.state, outcome.error, outcome.retry_at, int(outcome.count), now, outcome.event_id)
                for outcome in outcomes
                if outcome.event_id in held
            ],
        )
        # An event whose lease had passed to another dispatcher is left as it is.
        return [event_id for event_id in ids if event_id not in held]

    def unclaim(self, owner: str, event_ids: Sequence[int], now: float | None = None) -> None:
        """Give back claimed events that ``owner`` never handed on (no attempt is charged)."""
        now = time.time() if now is None else now
        with self._write() as conn:
            conn.executemany(
                "UPDATE events SET lease_owner = NULL, lease_expires = NULL, updated_at = ?"
                " WHERE id = ? AND lease_owner = ? AND state = 'pending'",
                [(now, event_id, owner) for event_id in event_ids],
            )

    def release(self, owner_prefix: str, error: str, now: float | None = None) -> int:
        """Free the claims of a dispatcher known to be dead (owners starting with ``owner_prefix``).

        What its progress log (:mod:`soapreceptor.progress`) says it handed
        on is recorded as delivered; the event it had in hand is charged the
        attempt, with ``error`` as its outcome; the rest of its batch goes
        back untouched. Without a log (a dispatcher claiming one event at a
        time, its attempt counted when claimed) every claim keeps ``error``.
        Returns how many claims were freed.
        """
        now = time.time() if now is None else now
        logs = progress.logs_of(self.path, owner_prefix)
        pattern = owner_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        freed = 0
        with self._write() as conn:
            for owner, path in logs.items():
                found = progress.read(path)
                done = [Outcome(event_id, "delivered", count=True) for event_id in found.delivered]
                self._settle(conn, owner, done, now)
                freed += conn.execute(
                    "UPDATE events SET lease_owner = NULL, lease_expires = NULL, attempts = attempts + 1,"
                    " last_error = ?, updated_at = ? WHERE id = ? AND lease_owner = ? AND state = 'pending'",
                    (error, now, found.in_hand, owner),
                ).rowcount
                freed += conn.execute(
                    "UPDATE events SET lease_owner = NULL, lease_expires = NULL, updated_at = ?"
                    " WHERE lease_owner = ? AND state = 'pending'",
                    (now, owner),
                ).rowcount
            freed += conn.execute(
                "UPDATE events SET lease_owner = NULL, lease_expires = NULL, last_error = ?, updated_at = ?"
                " WHERE state = 'pending' AND lease_owner LIKE ? ESCAPE '\\'",
                (error, now, pattern),
            ).rowcount
        for path in logs.values():
            path.unlink(missing_ok=True)
        return freed

    def heartbeat(self, owner: str, now: float | None = None) -> None:
        """Record that dispatcher ``owner`` is alive."""
        now = time.time() if now is None else now
        with self._write() as conn:
            conn.execute(
                "INSERT INTO dispatchers (owner, beat_at) VALUES (?, ?)"
                " ON CONFLICT(owner) DO UPDATE SET beat_at = excluded.beat_at",
                (owner, now),
            )
            # Forget dispatchers silent for a day: they are not coming back.
            conn.execute("DELETE FROM dispatchers WHERE beat_at < ?", (now - 86400,))

    def last_heartbeat(self) -> float | None:
        """When any dispatcher last said it was alive (None: never)."""
        row = self._read("SELECT MAX(beat_at) FROM dispatchers")[0]
        return None if row[0] is None else float(row[0])

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database as far as readers allow, without waiting for anyone."""
        try:
            self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"the journal {self.path} could not be checkpointed: {exc}") from exc

    def check_writable(self) -> None:
        """Raise :class:`JournalError` unless the spool can be written and a write transaction taken now."""
        try:
            self.spool.check_writable()
        except SpoolError as exc:
            raise JournalError(str(exc)) from exc
        with self._write():
            pass

    def check_accepting(self) -> None:
        """Raise :class:`JournalError` unless accepted messages can be stored now (in the spool).

        What the receptor's answers need, and all a readiness probe asks:
        unlike :meth:`check_writable` it takes no lock, so it never waits for
        the dispatcher (which runs only on CPU time the workers leave).
        """
        try:
            self.spool.check_writable()
        except SpoolError as exc:
            raise JournalError(str(exc)) from exc

    def lease_owners(self) -> list[str]:
        """The dispatchers that hold claims right now."""
        return [
            str(row[0]) for row in self._read("SELECT DISTINCT lease_owner FROM events WHERE lease_owner IS NOT NULL")
        ]

    # -- operators' side --------------------------------------------------------

    def _queue_before_reading(self) -> None:
        # Readers see every event accepted so far, queued or not yet; a
        # journal that cannot be written is still read as it is.
        with contextlib.suppress(JournalError):
            self.queue_events()

    def _ingest_before_reading(self) -> None:
        # Counts include the messages still in the spool; a journal that cannot be written is read as it is.
        with contextlib.suppress(JournalError):
            self.ingest(everything=True)

    def get(self, event_id: int) -> StoredEvent | None:
        self._queue_before_reading()
        rows = self._read("SELECT * FROM events WHERE id = ?", (event_id,))
        return _stored(rows[0]) if rows else None

    def events(self, state: str | None = None, limit: int | None = None) -> list[StoredEvent]:
        """Events in arrival order, optionally only those in ``state``."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        self._queue_before_reading()
        rows = self._read(
            "SELECT * FROM events WHERE (? IS NULL OR state = ?) ORDER BY id LIMIT ?",
            (state, state, -1 if limit is None else int(limit)),
        )
        return [_stored(row) for row in rows]

    def counts(self, *, ingest: bool = True) -> dict[str, int]:
        """How many events are in each state (those of messages not yet queued count as pending).

        The messages still in the spool are moved into the journal first, so
        that they count; with ``ingest=False`` nothing is written and they do
        not (what a metrics scrape wants: it must never do the dispatcher's
        work, nor wait for the dispatcher's lock).
        """
        # One statement, so one snapshot: read in two, a dispatcher queueing a
        # message's events between them would hide them from both counts
        # (no longer unqueued, not yet seen in the events table).
        if ingest:
            self._ingest_before_reading()
        rows = self._read(
            "SELECT state, COUNT(*) FROM events GROUP BY state UNION ALL"
            " SELECT 'unqueued', TOTAL(event_count) FROM messages INDEXED BY messages_unqueued"
            " WHERE events_queued = 0"
        )
        found = {str(row[0]): int(row[1]) for row in rows}
        found["pending"] = found.get("pending", 0) + found.pop("unqueued", 0)
        return {state: found.get(state, 0) for state in STATES}

    def oldest_pending(self, *, ingest: bool = True) -> float | None:
        """When the oldest event not yet handed on arrived (``time.time()`` seconds); None if there is none.

        Pending events include those waiting for a retry and those of
        messages not yet queued, as in :meth:`counts`: how far behind the
        hook is, whether because the dispatcher cannot keep up or because
        the hook keeps failing. With ``ingest=False`` nothing is written:
        the messages still in the spool are read where they are (the first
        one of each segment), not moved into the journal.
        """
        if not ingest:
            found = [at for at in (self._oldest_in_journal(), self._oldest_spooled()) if at is not None]
            return min(found, default=None)
        self._ingest_before_reading()
        return self._oldest_in_journal()

    def _oldest_in_journal(self) -> float | None:
        # Messages are queued in arrival order, so a pending event in the events
        # table is always older than any message still unqueued: the first
        # subquery's answer, when there is one, is the oldest. One statement, one
        # snapshot (see counts).
        row = self._read(
            "SELECT COALESCE("
            "(SELECT m.received_at FROM events AS e INDEXED BY events_pending JOIN messages AS m"
            " ON m.id = e.message_id WHERE e.state = 'pending' ORDER BY e.id LIMIT 1),"
            " (SELECT received_at FROM messages INDEXED BY messages_unqueued WHERE events_queued = 0"
            " ORDER BY id LIMIT 1))"
        )[0]
        return None if row[0] is None else float(row[0])

    def _oldest_spooled(self) -> float | None:
        """When the oldest message still in the spool arrived, read from the segments; None if there is none."""
        taken = {str(name): int(at) for name, at in self._read("SELECT name, offset FROM spool_segments")}
        oldest: float | None = None
        try:
            for segment in self.spool.segments():
                at = taken.get(segment.name, 0)
                if at == _FINISHED:
                    continue
                # Each segment in arrival order: its first record not yet taken is its oldest.
                for record, _end in self.spool.read(segment, at, limit=1).records:
                    try:
                        received_at, _row = _unspooled(record)
                    except JournalError:
                        continue  # not a message: the next ingest passes over it (_pass_over)
                    oldest = received_at if oldest is None else min(oldest, received_at)
                    break
        except SpoolError as exc:
            raise JournalError(f"the journal could not read its spool: {exc}") from exc
        return oldest

    def redeliver(self, event_ids: Iterable[int], now: float | None = None) -> list[int]:
        """Put delivered or dead events back in line; returns the ids that were (not those still pending).

        Raises KeyError naming ids that do not exist or are duplicates (a
        duplicate has nothing of its own to deliver: redeliver its original).
        """
        now = time.time() if now is None else now
        ids = list(dict.fromkeys(int(i) for i in event_ids))
        with self._write() as conn:
            exists = "SELECT 1 FROM events WHERE id = ? AND state != 'duplicate'"
            unknown = [i for i in ids if conn.execute(exists, (i,)).fetchone() is None]
            if unknown:
                raise KeyError(unknown)
            changed = []
            for event_id in ids:
                cursor = conn.execute(
                    "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = ?, lease_owner = NULL,"
                    " lease_expires = NULL, updated_at = ? WHERE id = ? AND state IN ('delivered', 'dead')",
                    (now, now, event_id),
                )
                if cursor.rowcount:
                    changed.append(event_id)
        return changed

    def redeliver_dead(self, now: float | None = None) -> int:
        """Put every dead event back in line; returns how many."""
        now = time.time() if now is None else now
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?"
                " WHERE state = 'dead'",
                (now, now),
            )
            return cursor.rowcount

    def purge_delivered(self, older_than: float, now: float | None = None) -> int:
        """Delete events delivered more than ``older_than`` seconds ago, and messages left with no event.

        Duplicates pointing at a purged event go with it. Returns how many events were deleted.
        """
        now = time.time() if now is None else now
        cutoff = now - older_than
        with self._write() as conn:
            conn.execute(
                "DELETE FROM events WHERE duplicate_of IN"
                " (SELECT id FROM events WHERE state = 'delivered' AND updated_at < ?)",
                (cutoff,),
            )
            deleted = conn.execute(
                "DELETE FROM events WHERE state = 'delivered' AND updated_at < ?", (cutoff,)
            ).rowcount
            # (A message whose events are not queued yet has none in the table: it stays.)
            conn.execute(
                "UPDATE messages SET duplicate_of = NULL WHERE duplicate_of IN (SELECT id FROM messages"
                " WHERE events_queued = 1 AND id NOT IN (SELECT message_id FROM events))"
            )
            conn.execute("DELETE FROM messages WHERE events_queued = 1 AND id NOT IN (SELECT message_id FROM events)")
            return deleted


def _message_row(notification: Notification, arrival: Arrival, now: float) -> tuple[object, ...]:
    """A message's row for :data:`_APPEND_MESSAGE` (all but the id): worked out before the write lock is taken."""
    return _row(*_message_meta(notification, arrival, now))


def _message_meta(notification: Notification, arrival: Arrival, now: float) -> tuple[tuple[object, ...], bytes]:
    """A message row without its body, with its events as a list, not yet as JSON text; and the body.

    Each event's time is left a datetime: its JSON encoder writes it as
    ``isoformat()`` text (the spool's in C, on the answer path, see
    :func:`spool.encode <soapreceptor.spool.encode>`; :data:`_COMPACT_JSON`).
    """
    events = [(e.event_type, e.event_time, e.hit_type_id, e.hit_id, e.assignment_id) for e in notification.events]
    body = arrival.body
    if not isinstance(body, bytes):
        raise TypeError(f"a message's body is bytes, not {type(body).__name__}")
    meta = (
        now,
        arrival.request_id,
        arrival.remote_addr,
        arrival.soap_action,
        notification.version,
        notification.version_source,
        notification.timestamp,
        notification.signature,
        hashlib.sha256(body).hexdigest(),
        len(events),
        events,
    )
    return meta, body


#: A spool segment's offset once it is all in the journal and about to be deleted (see Journal._tidy_spool).
_FINISHED: Final[int] = -1
#: How the log names what a segment holds where its records stop (spool.Decoded.rest).
_DAMAGE: Final[dict[str, str]] = {"unwritten": "zeros", "incomplete": "a record cut short"}
#: Where the body is in a message row (:func:`_message_row`); a spool record keeps it apart, as raw bytes.
_BODY: Final[int] = 8


def _spooled(notification: Notification, arrival: Arrival, now: float) -> Record:
    """A message as a spool record: its row's values but the body, with the body kept apart as raw bytes.

    The events go in as a list, part of the record's one JSON text: as a JSON
    text of their own inside it, as the journal keeps them, they were encoded
    twice (the second time escaping every quote), on the answer path.
    """
    meta, body = _message_meta(notification, arrival, now)
    return Record(meta, body)


def _unspooled(record: Record) -> tuple[float, tuple[object, ...]]:
    """A spool record as a message row again, with its arrival time.

    Raises :class:`JournalError`, saying why, for a record that is not a
    message as :func:`_spooled` writes it (a later release's, or a bug's).
    Every value is checked, the events as the dispatcher will read them:
    what the journal takes in here, it can also queue and hand on, rather
    than fail at it on every turn after.
    """
    meta = record.meta
    if len(meta) != _SPOOLED_META:
        raise JournalError(f"it holds {len(meta)} values, not a message's {_SPOOLED_META}")
    for (name, types), value in zip(_SPOOLED_TYPES, meta, strict=True):
        if not isinstance(value, types) or isinstance(value, bool):
            raise JournalError(f"its {name} is {_preview(value)}, not {' or '.join(t.__name__ for t in types)}")
    received_at, version, count, events = meta[0], meta[4], meta[9], meta[-1]
    if not math.isfinite(received_at):
        raise JournalError(f"its received_at is {received_at!r}, not a time")
    try:
        # A list since the events went in unencoded; JSON text in records spooled before that.
        fields = json.loads(events) if isinstance(events, str) else events
        if not isinstance(fields, list) or not all(_event_fields(one) for one in fields):
            raise ValueError(f"{_preview(fields)} is not a list of events of five strings (or nulls) each")
        _events_from_fields(fields, version)  # as the dispatcher will read them
    except ValueError as exc:
        raise JournalError(f"its events cannot be read: {exc}") from None
    if len(fields) != count:
        raise JournalError(f"it says it holds {count} events but holds {len(fields)}")
    return float(received_at), _row(meta, record.body)


#: Each value of a spooled message (:func:`_message_meta`), the body apart: its name, and the types it may have.
_SPOOLED_TYPES: Final[tuple[tuple[str, tuple[type, ...]], ...]] = (
    ("received_at", (int, float)),
    ("request_id", (str, type(None))),
    ("remote_addr", (str, type(None))),
    ("soap_action", (str, type(None))),
    ("version", (str,)),
    ("version_source", (str,)),
    ("timestamp", (str,)),
    ("signature", (str, type(None))),
    ("body_sha256", (str,)),
    ("event_count", (int,)),
    ("events", (list, str)),
)
#: How many values a message row holds besides the body.
_SPOOLED_META: Final[int] = len(_SPOOLED_TYPES)


def _event_fields(fields: object) -> bool:
    """Whether ``fields`` is one event as a spool record holds it: type, time, HIT type, HIT, assignment."""
    return (
        isinstance(fields, list)
        and len(fields) == 5
        and isinstance(fields[0], str)
        and all(value is None or isinstance(value, str) for value in fields)
    )


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _row(meta: tuple[object, ...], body: bytes) -> tuple[object, ...]:
    """A message row from its values but the body (:func:`_message_meta`) and the body."""
    events = meta[-1]
    # A list since the events went in unencoded; JSON text in records spooled before that.
    events_json = events if isinstance(events, str) else _COMPACT_JSON.encode(events)
    return (*meta[:_BODY], body, *meta[_BODY:-1], events_json)


@dataclass(frozen=True, slots=True)
class _Unqueued:
    """An appended message whose events wait to be queued, with everything worked out that needs no lock."""

    message_id: int
    received_at: float
    digest: str
    events: list[Event]
    keys: list[str | None]
    #: Whether no two of its events share a key.
    distinct: bool
    #: Its event rows if none of its events turns out to be a duplicate (the common case).
    rows: list[tuple[object, ...]]


def _read_unqueued(conn: sqlite3.Connection, limit: int | None, *, after: int = 0) -> list[_Unqueued]:
    """The oldest appended messages (past id ``after``) whose events are not queued yet, up to ``limit`` (None: all)."""
    found = []
    for message_id, received_at, version, digest, events_json in conn.execute(
        "SELECT id, received_at, version, body_sha256, events FROM messages INDEXED BY messages_unqueued"
        " WHERE events_queued = 0 AND id > ? ORDER BY id LIMIT ?",
        (after, -1 if limit is None else limit),
    ).fetchall():
        fields = json.loads(events_json)
        events = _events_from_fields(fields, version)
        # The keys and rows from the stored text of each EventTime (what isoformat() gave it), not
        # from the datetime again: the dispatcher does this for every event.
        keys = [None if not at else _key(kind, hit, assignment, at) for kind, at, _type, hit, assignment in fields]
        rows = _event_rows(
            message_id, events, keys, [None] * len(events), now=received_at, times=[f[1] for f in fields]
        )
        found.append(_Unqueued(message_id, received_at, digest, events, keys, len(set(keys)) == len(keys), rows))
    return found


def _claimed(claimed: tuple[sqlite3.Row, int] | StoredEvent, now: float) -> StoredEvent:
    """A claimed event as the dispatcher gets it: with its attempts as charged and its claim time."""
    if isinstance(claimed, StoredEvent):
        return claimed
    row, attempts = claimed
    return _stored(row, attempts=attempts, updated_at=now)


def _last_insert_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])


class _Claim:
    """A dispatcher's claim on the first ``room`` new pending events it queues (see :meth:`Journal.claim_batch`).

    They are inserted with its lease (``(owner, expires)``) rather than
    inserted and then claimed: one write per event instead of two, in the
    transaction the receptor's workers wait for.
    """

    def __init__(self, lease: tuple[str, float], room: int, now: float) -> None:
        self.lease = lease
        self.room = room
        self.now = now
        self.events: list[StoredEvent] = []

    def leased(self, row: tuple[object, ...]) -> tuple[object, ...]:
        """An :func:`_event_rows` row, claimed: its last two columns are the lease."""
        return row[:-2] + self.lease

    def took(self, message: _Unqueued, claimed: list[tuple[int, int]]) -> None:
        """Events of ``message`` were just inserted claimed: ``(event id, seq)`` each."""
        for event_id, seq in claimed:
            self.events.append(
                StoredEvent(
                    id=event_id,
                    message_id=message.message_id,
                    event=message.events[seq],
                    state="pending",
                    attempts=0,
                    next_attempt_at=message.received_at,
                    last_error=None,
                    duplicate_of=None,
                    updated_at=self.now,
                )
            )
        self.room -= len(claimed)


def _events_from_fields(fields: list[list[str | None]], version: str) -> list[Event]:
    """Events from a message's ``events`` column, read as JSON (see :func:`_message_row`)."""
    return [
        Event(
            event_type=str(event_type),
            event_time=dt.datetime.fromisoformat(event_time) if event_time else None,
            hit_type_id=hit_type_id,
            hit_id=hit_id,
            assignment_id=assignment_id,
            version=version,
        )
        for event_type, event_time, hit_type_id, hit_id, assignment_id in fields
    ]


def _event_rows(
    message_id: int,
    events: Sequence[Event],
    keys: Sequence[str | None],
    originals: Sequence[int | None],
    *,
    now: float,
    first: int = 0,
    times: Sequence[str | None] | None = None,
) -> list[tuple[object, ...]]:
    """Rows for :data:`_INSERT_EVENT`: events ``first``, ``first + 1``... of a message, given what each duplicates.

    ``times``: each event's time as stored, if at hand (saves formatting it again).
    """
    if times is None:
        times = [event.event_time.isoformat() if event.event_time else None for event in events]
    rows: list[tuple[object, ...]] = []
    for seq, (event, key, duplicate_of, at) in enumerate(zip(events, keys, originals, times, strict=True), start=first):
        pending = duplicate_of is None
        rows.append(
            (
                message_id,
                seq,
                event.event_type,
                at,
                event.hit_type_id,
                event.hit_id,
                event.assignment_id,
                event.version,
                key if pending else None,
                "pending" if pending else "duplicate",
                duplicate_of,
                now if pending else None,
                now,
                None,  # lease_owner and lease_expires: unclaimed (see _Claim.leased)
                None,
            )
        )
    return rows


def _close_own(opened: list[tuple[int, sqlite3.Connection]], fds: list[tuple[int, int]]) -> None:
    me = os.getpid()
    for pid, conn in [entry for entry in opened if entry[0] == me]:
        conn.close()
        opened.remove((pid, conn))
    for pid, fd in [entry for entry in fds if entry[0] == me]:
        os.close(fd)
        fds.remove((pid, fd))


def _stored(row: sqlite3.Row, *, attempts: int | None = None, updated_at: float | None = None) -> StoredEvent:
    """An event row as a :class:`StoredEvent`; ``attempts`` and ``updated_at`` as given, if given."""
    return StoredEvent(
        id=row["id"],
        message_id=row["message_id"],
        event=Event(
            event_type=row["event_type"],
            event_time=dt.datetime.fromisoformat(row["event_time"]) if row["event_time"] else None,
            hit_type_id=row["hit_type_id"],
            hit_id=row["hit_id"],
            assignment_id=row["assignment_id"],
            version=row["version"],
        ),
        state=row["state"],
        attempts=row["attempts"] if attempts is None else attempts,
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        duplicate_of=row["duplicate_of"],
        updated_at=row["updated_at"] if updated_at is None else updated_at,
    )
