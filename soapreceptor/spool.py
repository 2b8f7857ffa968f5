"""The spool: where each worker makes an accepted message durable, with no lock shared with anyone.

The journal is one SQLite file, and SQLite lets one writer in at a time: when
the workers committed there, each answer waited for the other workers'
commits and for the dispatcher's, and a request's latency was everyone's
(issue 8 measured the waits). So a worker does not write the journal on the
answer path. Each worker process appends its messages to a *segment* file of
its own and syncs it (``fdatasync``) before the answers go out; the
dispatcher moves them into the journal (:meth:`Journal.ingest
<soapreceptor.journal.Journal.ingest>`) in arrival order and deletes a segment
once every record in it is in the journal and its writer has left it.

A segment is a sequence of records, each ``magic, payload length, CRC-32,
payload``, so that a record that was not written whole (power lost during an
unsynced write) is recognised, never read as a message. Its payload holds the
message's metadata as JSON (UTF-8, compact) and its body as raw bytes. The
records are followed by zeros: a writer sets space aside ahead of them
(:data:`PREALLOCATE` at a time) by writing zeros (a page at a time:
:func:`write_zeros`), so that most syncs write the records alone; syncing a
write that makes the file longer also commits the file system's journal, which
took about a sixth of the receptor's throughput. (Where there is no room to
set space aside, the records are written on their own.) The first zero where a
record would start is where the records end; only in a sealed segment are the
bytes after that, or after damage, searched for whole records
(:func:`salvage`), as a writer may still be writing there.

A writer holds an ``flock`` on its segment for as long as it may append to
it; it takes the lock before the segment has its name (created under a
temporary name, then renamed), so that nobody can see a segment with no
writer that is still going to grow. A segment whose lock is free is
*sealed*: it never changes again, and once ingested it can go. A writer
leaves its segment when it reaches :data:`SEGMENT_BYTES`, after a write that
failed (the next append starts a fresh one), or when its process ends.

Pure code (the record format) first, then the files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import shutil
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

#: A segment is left for a new one once it holds this many bytes, so that ingested ones can be deleted.
SEGMENT_BYTES: Final[int] = 16 * 1024 * 1024
#: A writer sets a segment's space aside this much at a time, written as zeros (see Spool.append).
PREALLOCATE: Final[int] = 1024 * 1024
_READ_STEP: Final[int] = 64 * 1024
#: Most bytes one ingest reads from one segment (a turn of the dispatcher, not a whole backlog at once).
#: Each turn is one synced transaction: what it writes, the disk flushes before any worker's sync that
#: comes behind it returns, so a turn's size is a stall it can put on the answers. In paced runs at half
#: of peak side by side (issue 8), with checkpoints every 0.1 s: 4 MiB turns let 10 to 51 messages a
#: run wait over 10 ms for their sync (p99 from due 6.7-12.6 ms), 1 MiB turns none (5.0-7.3 ms);
#: 256 KiB turns did about as well as 1 MiB but cleared a backlog 5 % slower, 1 MiB as fast as 4 MiB.
READ_BYTES: Final[int] = 1024 * 1024
SUFFIX: Final[str] = ".seg"
#: A segment being created: its writer holds its lock, but it has no records and no final name yet.
_CREATING: Final[str] = ".new"
DAMAGED: Final[str] = "damaged"
#: Seconds after which a segment still being created is known to have lost its writer.
STALE_CREATION: Final[float] = 60.0

_MAGIC: Final[bytes] = b"SRs1"
_HEADER: Final[struct.Struct] = struct.Struct("<4sII")  # magic, payload length, CRC-32 of the payload
_META_LENGTH: Final[struct.Struct] = struct.Struct("<I")
_PAGE: Final[int] = mmap.PAGESIZE
_ZERO_PAGE: Final[bytes] = bytes(_PAGE)
#: Larger than any message the gate lets in (its cap is 1 MiB by default), with room for metadata:
#: a length beyond it is damage, not a record.
_MAX_PAYLOAD: Final[int] = 256 * 1024 * 1024


class SpoolError(OSError):
    """The spool could not be written or read."""


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled message: its metadata and its body, byte for byte.

    The metadata are values JSON has (str, float, None, integers within 64
    bits, lists and tuples of them), and datetimes, written as ISO 8601 text
    (what ``isoformat`` gives; read back as that text). :func:`encode`
    raises TypeError for any other.
    """

    meta: tuple[Any, ...]
    body: bytes


# -- the record format (pure) --------------------------------------------------


def encode(record: Record) -> bytes:
    """A record as it is written to a segment."""
    # orjson, not json: this is on the answer path, and json took twenty times as long
    # (6.4 µs against 0.3 for a 10-event message's metadata); it writes a datetime as
    # its isoformat() text too, which spares the caller a conversion per event.
    meta = orjson.dumps(record.meta)
    payload = b"".join((_META_LENGTH.pack(len(meta)), meta, record.body))
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Decoded:
    """What :func:`decode` found in a stretch of a segment."""

    #: Each whole record, with the offset just past it (relative to the stretch's start).
    records: list[tuple[Record, int]]
    #: Where the whole records end.
    end: int
    #: What follows the whole records: "" nothing, "unwritten" the zeros set aside for more,
    #: "incomplete" what may be the start of a record not yet all there, "damaged" what cannot be one.
    rest: str


def decode(data: bytes | memoryview) -> Decoded:
    """The whole records at the start of ``data``, and what follows them."""
    view = memoryview(data)
    records: list[tuple[Record, int]] = []
    at = 0
    while at < len(view):
        found = _record_at(view, at)
        if isinstance(found, str):
            return Decoded(records, at, found)
        records.append(found)
        at = found[1]
    return Decoded(records, at, "")


def _record_at(view: memoryview, at: int) -> tuple[Record, int] | str:
    """The whole record that starts at ``at`` and the offset just past it; or what is there instead (Decoded.rest)."""
    if not any(view[at : at + len(_MAGIC)]):
        return "unwritten"
    if len(view) - at < _HEADER.size:
        return "incomplete" if _MAGIC.startswith(bytes(view[at : at + 4])) else "damaged"
    magic, length, crc = _HEADER.unpack_from(view, at)
    if magic != _MAGIC or length > _MAX_PAYLOAD or length < _META_LENGTH.size:
        return "damaged"
    start = at + _HEADER.size
    if len(view) - start < length:
        return "incomplete"
    payload = view[start : start + length]
    if zlib.crc32(payload) != crc:
        return "damaged"
    (meta_length,) = _META_LENGTH.unpack_from(payload)
    try:
        if meta_length > length - _META_LENGTH.size:
            raise ValueError("metadata longer than the record")
        # (orjson.JSONDecodeError is a ValueError; it also refuses invalid UTF-8 and nesting past 1024.)
        meta = orjson.loads(payload[_META_LENGTH.size : _META_LENGTH.size + meta_length])
    except ValueError:
        return "damaged"
    if not isinstance(meta, list):
        return "damaged"
    return Record(tuple(meta), bytes(payload[_META_LENGTH.size + meta_length :])), start + length


@dataclass(frozen=True, slots=True)
class Salvaged:
    """The whole records found past the end of a segment's readable records (:func:`salvage`)."""

    #: Each record, with the offset just past it (relative to where the search started).
    records: list[tuple[Record, int]]
    #: The bytes passed over before the last of them: damage, and zeros where records should be.
    skipped: int


def salvage(data: bytes) -> Salvaged:
    """The whole records in ``data``, which starts where :func:`decode` stopped: at damage, or at zeros.

    In a sealed segment nothing but zeros may follow the records; a whole
    record further on means a stretch of the disk came back damaged or
    zeroed, and the records after it were accepted (answered 200) like any
    other, so they must not be lost with it. A record counts only where its
    magic, length and CRC-32 all hold and its metadata is a JSON list, so
    bytes that merely look like the start of one (the magic in a body) are
    passed over. A body that embedded a whole encoded record, with damage
    falling just before it, would be read as that record; but such a body
    passed the signature check (or came where unsigned messages are
    accepted), so whoever could craft it could as well have sent the
    embedded events in a message of their own.
    """
    view = memoryview(data)
    records: list[tuple[Record, int]] = []
    skipped = 0
    at = 0  # not a record here: decode stopped at it
    while (found := _resync(data, view, at + 1)) is not None:
        skipped += found - at
        decoded = decode(view[found:])
        records += [(record, found + end) for record, end in decoded.records]
        at = found + decoded.end
    return Salvaged(records, skipped)


def _resync(data: bytes, view: memoryview, start: int) -> int | None:
    """Where the first whole record at or after ``start`` begins, if one does."""
    at = data.find(_MAGIC, start)
    while at >= 0:
        if not isinstance(_record_at(view, at), str):
            return at
        at = data.find(_MAGIC, at + 1)
    return None


# -- the files -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment file as the ingester finds it."""

    path: Path
    size: int

    @property
    def name(self) -> str:
        return self.path.name


#: Every Spool of this process, for the fork hook below (weakly: a spool no longer used may go).
_LIVE: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for spool in list(_LIVE):
        spool._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Spool:
    """The spool directory ``directory``: this process's appends, and what the ingester needs.

    One object may be shared by the threads of a process and survives a
    fork: a process that forked appends to a segment of its own.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, segment_bytes: int = SEGMENT_BYTES, preallocate: int = PREALLOCATE
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.preallocate = preallocate
        self._lock = threading.Lock()
        self._fd = -1  # this process's segment (a forked child lets go of its parent's: _after_fork)
        self._path: Path | None = None
        self._size = 0  # where this process's records end in its segment
        self._allocated = 0  # and where the zeros set aside after them do
        self._next_try = 0  # after a failed preallocation: where the records must reach before the next
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"<Spool {self.directory}>"

    # -- the workers' side ---------------------------------------------------------

    def append(self, records: Sequence[Record]) -> None:
        """Write ``records`` to this process's segment and sync it: once this returns they survive a power loss.

        Raises :class:`SpoolError` if they may not have: then the segment
        is left (cut back to its last whole record where possible) and the
        next append starts a new one.
        """
        data = b"".join(encode(record) for record in records)
        with self._lock:
            fd = self._segment()
            try:
                end = self._size + len(data)
                if end > self._allocated and end >= self._next_try:
                    self._preallocate(fd, end)
                _write_all(fd, data, self._size)
                os.fdatasync(fd)
            except OSError as exc:
                path = self._path
                self._leave(cut=True)
                raise SpoolError(f"could not write the spool segment {path}: {exc}") from exc
            self._size += len(data)
            if self._size >= self.segment_bytes:
                self._leave()

    def _preallocate(self, fd: int, end: int) -> None:
        """Set space aside after ``end``, synced with the records: the file grows once per PREALLOCATE bytes.

        Where there is no room for that (a nearly full disk, a file size
        limit), what was taken is given back and the records are written on
        their own: a message that fits must not be refused for want of the
        space set aside after it. Nor must each message pay for a failed
        try (up to PREALLOCATE bytes of zeros written, then cut off): the next
        try waits until the records have grown by PREALLOCATE, as they would
        have between two that succeeded.
        """
        allocated = -(-end // self.preallocate) * self.preallocate
        try:
            write_zeros(fd, end, allocated)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, max(self._allocated, self._size))
            self._next_try = end + self.preallocate
            return
        self._allocated = allocated

    def close(self) -> None:
        """Leave this process's segment (it is sealed: the ingester may take it and delete it)."""
        with self._lock:
            self._leave()

    def _after_fork(self) -> None:
        """In a forked child: let go of the parent's segment, so that it stays the parent's alone.

        The child's copy of the descriptor shares the parent's open file, and
        so its lock: kept open, it would hold the segment "being written" for
        as long as the child lives, after the parent has left it, and the
        ingester could neither seal nor delete it. The thread lock is made
        anew: another thread of the parent may have held it at the fork.
        """
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._lock = threading.Lock()
        self._fd, self._path = -1, None  # the next append starts a segment of the child's own (_segment)

    def _segment(self) -> int:
        if self._fd < 0:
            self._fd, self._path = self._create()
            self._size = self._allocated = self._next_try = 0
        return self._fd

    def _create(self) -> tuple[int, Path]:
        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, exist_ok=True)
                _sync_directory(self.directory.parent)  # the spool itself survives a power loss
            stem = f"{time.time_ns():020d}-{os.getpid()}"
            creating = self.directory / f"{stem}{_CREATING}"
            fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpoolError(f"could not create a segment in the spool {self.directory}: {exc}") from exc
        try:
            # Locked before it is a segment: the ingester never sees it without its writer.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = creating.with_suffix(SUFFIX)
            os.rename(creating, path)
            _sync_directory(self.directory)  # its name survives a power loss, as its records will
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                creating.unlink()
            raise SpoolError(f"could not create a segment in the spool {self.directory}: {exc}") from exc
        return fd, path

    def _leave(self, *, cut: bool = False) -> None:
        if self._fd < 0:
            return
        if cut:
            # A failed write may have left part of a record: cut it off, so the segment stays readable to the end.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
                os.fdatasync(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._fd)  # releases the lock: the segment is sealed
        self._fd, self._path = -1, None

    def check_writable(self) -> None:
        """Raise :class:`SpoolError` unless this process could create a segment now."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise SpoolError(f"the spool {self.directory} is not writable")

    # -- the ingester's side ---------------------------------------------------------

    def segments(self) -> list[Segment]:
        """The segments, oldest first (a missing spool directory has none)."""
        found = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.endswith(SUFFIX) and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    found.append(Segment(Path(entry.path), entry.stat().st_size))
        return sorted(found, key=lambda segment: segment.name)

    @staticmethod
    def read(segment: Segment, offset: int, limit: int = READ_BYTES) -> Decoded:
        """The whole records of ``segment`` from ``offset`` (about ``limit`` bytes of them at most), and what follows.

        Read a step at a time, so that the zeros set aside after the
        records cost one step, not a read of all of them.
        """
        records: list[tuple[Record, int]] = []
        taken = 0  # bytes of whole records read so far
        pending = b""  # what follows them, read but not yet a whole record
        try:
            with open(segment.path, "rb") as file:
                file.seek(offset)
                while True:
                    step = file.read(_READ_STEP)
                    data = pending + step
                    decoded = decode(data)
                    records += [(record, taken + end) for record, end in decoded.records]
                    taken += decoded.end
                    pending = data[decoded.end :]
                    if not step or decoded.rest in ("unwritten", "damaged") or taken >= limit:
                        return Decoded(records, taken, decoded.rest)
        except FileNotFoundError:
            return Decoded(records, taken, "")
        except OSError as exc:
            raise SpoolError(f"could not read the spool segment {segment.path}: {exc}") from exc

    @staticmethod
    def salvage_from(segment: Segment, offset: int) -> Salvaged:
        """The whole records of sealed ``segment`` past ``offset``, where :meth:`read` found no more (:func:`salvage`).

        Offsets in the answer are relative to ``offset``, as :meth:`read`'s
        are. Reads the rest of the segment at once: a sealed segment is at
        most about :data:`SEGMENT_BYTES`, and this runs once per segment.
        """
        try:
            with open(segment.path, "rb") as file:
                file.seek(offset)
                data = file.read()
        except FileNotFoundError:
            return Salvaged([], 0)
        except OSError as exc:
            raise SpoolError(f"could not read the spool segment {segment.path}: {exc}") from exc
        return salvage(data)

    @staticmethod
    def has_more(segment: Segment, offset: int) -> bool:
        """Whether anything but the zeros set aside starts at ``offset`` in ``segment`` (a record, or damage)."""
        if segment.size <= offset:
            return False
        try:
            with open(segment.path, "rb") as file:
                file.seek(offset)
                return any(file.read(len(_MAGIC)))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SpoolError(f"could not read the spool segment {segment.path}: {exc}") from exc

    @staticmethod
    @contextlib.contextmanager
    def sealed(segment: Segment) -> Iterator[bool]:
        """Whether ``segment`` is sealed (no writer may append to it again), held so while the block runs."""
        try:
            fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def remove(self, segment: Segment) -> None:
        """Delete a segment (sealed, and all in the journal), for good once this returns.

        The directory is synced: a segment that came back after a power
        loss, once the journal has forgotten how far it took it, would be
        taken again.
        """
        segment.path.unlink()
        _sync_directory(self.directory)

    def keep(self, segment: Segment) -> Path:
        """Keep ``segment`` as it is in ``damaged/`` in the spool, for a person to look at; its path there.

        A second name for the same file (a hard link): nothing is copied, it
        stays when the segment leaves the spool, and keeping it again (after
        a process died between keeping it and removing it) costs nothing.
        Where the file system has no hard links, a copy, synced.
        """
        aside = self.directory / DAMAGED
        target = aside / segment.name
        try:
            aside.mkdir(exist_ok=True)
            try:
                os.link(segment.path, target)
            except FileExistsError:
                if not os.path.samefile(segment.path, target):
                    _copy(segment.path, target)  # an earlier copy: this one may have grown since
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                _copy(segment.path, target)
            _sync_directory(aside)
            _sync_directory(self.directory)  # damaged/ itself, if this made it
        except OSError as exc:
            raise SpoolError(f"could not keep the spool segment {segment.path} in {aside}: {exc}") from exc
        return target

    def remove_stale_creations(self, older_than: float = STALE_CREATION) -> None:
        """Remove segments whose writer died while creating them: nothing was ever written to them.

        Only those older than ``older_than`` seconds: a young one may be a
        writer's that has not taken its lock yet.
        """
        for path in self.directory.glob(f"*{_CREATING}"):
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > older_than:
                    with self.sealed(Segment(path, 0)) as sealed:
                        if sealed:
                            path.unlink()


def _write_all(fd: int, data: bytes, offset: int) -> None:
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], offset + written)


def write_zeros(fd: int, start: int, stop: int) -> None:
    """Write zeros to ``fd`` from offset ``start`` to ``stop``, one memory page at a time.

    Not in one write: the page cache keeps what one write brings in as a
    folio (pages dirtied and written back together) as large as the write
    and its alignment allow, up to megabytes (XFS for years, ext4 in recent
    kernels). Each record later written into those zeros would then dirty
    the whole folio, and its sync write all of it to the disk (seen here on
    Linux 6.18, ext4: folios of up to 1 MiB, and in paced runs the
    receptor's workers sent the disk 115 to 310 KB a 10-event message; 13 KB
    with the zeros written a page at a time). A write of at most a page
    leaves each page a folio of its own, so that a sync writes only the
    pages its records are in.
    """
    at = start
    while at < stop:
        upto = min(stop, (at // _PAGE + 1) * _PAGE)
        _write_all(fd, _ZERO_PAGE[: upto - at], at)
        at = upto


def _copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` whole or not at all: written under another name, synced, then renamed."""
    partial = target.with_name(f"{target.name}{_CREATING}")
    shutil.copyfile(source, partial)
    fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, target)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
