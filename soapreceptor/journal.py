"""The journal: every accepted notification, stored durably before the receptor answers.

MTurk sends each notification once and never retries, so once the receptor
has answered 200 the journal holds the only copy of those events. It is an
SQLite file shared by every gunicorn worker and every dispatcher on the host.

Durability: WAL mode with ``synchronous=FULL``. In WAL mode ``FULL`` syncs the
write-ahead log at every commit, so a transaction that has committed survives
a crash of the process *and* a power loss; ``NORMAL`` (the usual WAL setting)
may lose the last commits on power loss, which here would be events already
answered 200. One fsync per accepted message is the price.

Each event row moves through ``pending`` -> ``delivered`` or ``dead``; an event
that arrived before (a replayed message, or the same event in another message)
is stored as ``duplicate``, pointing at the original, and never handed on.
A dispatcher *claims* a pending event with a lease; if it dies, the lease
expires and another dispatcher takes the event again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import SoapreceptorError
from .model import Event, Notification

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
    duplicate_of    INTEGER REFERENCES messages(id)
);
CREATE INDEX IF NOT EXISTS messages_by_body ON messages(body_sha256);

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
CREATE INDEX IF NOT EXISTS events_due ON events(state, next_attempt_at, id);
-- At most one stored copy of each identifiable event: the rest are duplicates.
CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events(dedup_key) WHERE state != 'duplicate';

-- Each dispatcher says it is alive here every few seconds (for /readyz).
CREATE TABLE IF NOT EXISTS dispatchers (
    owner           TEXT    PRIMARY KEY,
    beat_at         REAL    NOT NULL
);
"""


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
    return json.dumps([event.event_type, event.hit_id, event.assignment_id, event.event_time.isoformat()])


class Journal:
    """An SQLite journal at ``path``; safe to share between processes (open one per process).

    ``busy_timeout`` bounds how long a write waits for another writer's lock
    before giving up with :class:`JournalError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        # Every connection this object opened, with the process that opened it:
        # closed with the journal, but only in that process (a connection
        # inherited through fork must never be touched by the child).
        self._opened: list[tuple[int, sqlite3.Connection]] = []
        weakref.finalize(self, _close_own, self._opened)

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
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        return conn

    def open(self) -> Journal:
        """Open (creating if needed) and check the journal now; raise :class:`JournalError` if unusable."""
        self._connection()
        return self

    def close(self) -> None:
        """Close the connections this process opened; the journal reopens on next use."""
        _close_own(self._opened)
        self._local.conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (BEGIN IMMEDIATE), so writers queue on busy_timeout."""
        conn = self._connection()
        try:
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

    def _read(self, sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
        conn = self._connection()
        try:
            cursor = conn.execute(sql, parameters)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())
        except sqlite3.Error as exc:
            raise JournalError(f"the journal {self.path} could not be read: {exc}") from exc

    # -- the receptor's side ----------------------------------------------------

    def record(self, notification: Notification, arrival: Arrival, now: float | None = None) -> Recorded:
        """Store an accepted notification and its events durably; return what was stored.

        The commit has happened when this returns. The same message (byte for
        byte) stored before makes every event of this one a duplicate; an
        event seen before in another message is a duplicate on its own.
        """
        now = time.time() if now is None else now
        digest = hashlib.sha256(arrival.body).hexdigest()
        with self._write() as conn:
            original = conn.execute(
                "SELECT id FROM messages WHERE body_sha256 = ? AND duplicate_of IS NULL ORDER BY id LIMIT 1", (digest,)
            ).fetchone()
            original_id = original[0] if original else None
            message_id = conn.execute(
                "INSERT INTO messages (received_at, request_id, remote_addr, soap_action, version, version_source,"
                " timestamp, signature, body, body_sha256, event_count, duplicate_of)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    arrival.request_id,
                    arrival.remote_addr,
                    arrival.soap_action,
                    notification.version,
                    notification.version_source,
                    notification.timestamp,
                    notification.signature,
                    arrival.body,
                    digest,
                    len(notification.events),
                    original_id,
                ),
            ).lastrowid
            if message_id is None:  # pragma: no cover (SQLite always sets it after an INSERT)
                raise JournalError("the journal did not return the new message's id")
            pending = duplicates = 0
            for seq, event in enumerate(notification.events):
                key = dedup_key(event)
                duplicate_of = self._original_event(conn, original_id, seq, key)
                state = "pending" if duplicate_of is None else "duplicate"
                conn.execute(
                    "INSERT INTO events (message_id, seq, event_type, event_time, hit_type_id, hit_id, assignment_id,"
                    " version, dedup_key, state, duplicate_of, next_attempt_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        message_id,
                        seq,
                        event.event_type,
                        event.event_time.isoformat() if event.event_time else None,
                        event.hit_type_id,
                        event.hit_id,
                        event.assignment_id,
                        event.version,
                        key if state == "pending" else None,
                        state,
                        duplicate_of,
                        now if state == "pending" else None,
                        now,
                    ),
                )
                pending += state == "pending"
                duplicates += state == "duplicate"
        return Recorded(message_id, pending, duplicates, original_id is not None)

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
        with self._write() as conn:
            row = conn.execute(
                "SELECT id FROM events WHERE state = 'pending' AND next_attempt_at <= ?"
                " AND (lease_expires IS NULL OR lease_expires < ?) ORDER BY id LIMIT 1",
                (now, now),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE events SET lease_owner = ?, lease_expires = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE id = ?",
                (owner, now + lease, now, row[0]),
            )
        return self.get(int(row[0]))

    def delivered(self, event_id: int, owner: str, now: float | None = None) -> bool:
        """Mark a claimed event delivered; False if ``owner`` no longer held its lease."""
        return self._finish(event_id, owner, "delivered", error=None, retry_at=None, now=now)

    def failed(self, event_id: int, owner: str, error: str, retry_at: float | None, now: float | None = None) -> bool:
        """Record a failed attempt: pending again at ``retry_at``, or dead when it is None."""
        state = "dead" if retry_at is None else "pending"
        return self._finish(event_id, owner, state, error=error, retry_at=retry_at, now=now)

    def _finish(
        self, event_id: int, owner: str, state: str, *, error: str | None, retry_at: float | None, now: float | None
    ) -> bool:
        now = time.time() if now is None else now
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE events SET state = ?, last_error = COALESCE(?, last_error), next_attempt_at = ?,"
                " lease_owner = NULL, lease_expires = NULL, updated_at = ?"
                " WHERE id = ? AND lease_owner = ? AND state = 'pending'",
                (state, error, retry_at, now, event_id, owner),
            )
            return cursor.rowcount == 1

    def release(self, owner_prefix: str, error: str, now: float | None = None) -> int:
        """Free the claims of a dispatcher known to be dead (owners starting with ``owner_prefix``).

        The attempt it was making stays counted, with ``error`` as its outcome.
        Returns how many claims were freed.
        """
        now = time.time() if now is None else now
        pattern = owner_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._write() as conn:
            return conn.execute(
                "UPDATE events SET lease_owner = NULL, lease_expires = NULL, last_error = ?, updated_at = ?"
                " WHERE state = 'pending' AND lease_owner LIKE ? ESCAPE '\\'",
                (error, now, pattern),
            ).rowcount

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

    def check_writable(self) -> None:
        """Raise :class:`JournalError` unless a write transaction can be taken now."""
        with self._write():
            pass

    def lease_owners(self) -> list[str]:
        """The dispatchers that hold claims right now."""
        return [
            str(row[0]) for row in self._read("SELECT DISTINCT lease_owner FROM events WHERE lease_owner IS NOT NULL")
        ]

    # -- operators' side --------------------------------------------------------

    def get(self, event_id: int) -> StoredEvent | None:
        rows = self._read("SELECT * FROM events WHERE id = ?", (event_id,))
        return _stored(rows[0]) if rows else None

    def events(self, state: str | None = None, limit: int | None = None) -> list[StoredEvent]:
        """Events in arrival order, optionally only those in ``state``."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        rows = self._read(
            "SELECT * FROM events WHERE (? IS NULL OR state = ?) ORDER BY id LIMIT ?",
            (state, state, -1 if limit is None else int(limit)),
        )
        return [_stored(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many events are in each state."""
        found = {row[0]: row[1] for row in self._read("SELECT state, COUNT(*) FROM events GROUP BY state")}
        return {state: int(found.get(state, 0)) for state in STATES}

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
            conn.execute(
                "UPDATE messages SET duplicate_of = NULL WHERE duplicate_of IN"
                " (SELECT id FROM messages WHERE id NOT IN (SELECT message_id FROM events))"
            )
            conn.execute("DELETE FROM messages WHERE id NOT IN (SELECT message_id FROM events)")
            return deleted


def _close_own(opened: list[tuple[int, sqlite3.Connection]]) -> None:
    me = os.getpid()
    for pid, conn in [entry for entry in opened if entry[0] == me]:
        conn.close()
        opened.remove((pid, conn))


def _stored(row: sqlite3.Row) -> StoredEvent:
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
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        duplicate_of=row["duplicate_of"],
        updated_at=row["updated_at"],
    )
