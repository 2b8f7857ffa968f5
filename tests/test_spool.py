"""The spool: its record format, its segments, and how the journal takes them in (exactly once, in arrival order)."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import multiprocessing
import os
import resource
import signal
import sqlite3
import struct
import time
import zlib
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soapreceptor import spool, wire
from soapreceptor.journal import Arrival, Journal, JournalError
from soapreceptor.model import Notification
from soapreceptor.spool import Record, Segment, Spool
from tests.support import ACCEPTED_EVENT, amazon_envelope

T0 = 1_000_000_000.0


def message(*assignments: str) -> tuple[Notification, Arrival]:
    events = [{**ACCEPTED_EVENT, "AssignmentId": a} for a in assignments]
    body = amazon_envelope(events=events)
    return wire.parse_notify(body), Arrival(body=body, request_id=f"r-{assignments[0]}", remote_addr="127.0.0.1")


def stored_assignments(journal: Journal) -> list[str]:
    return [str(stored.event.assignment_id) for stored in journal.events()]


def message_count(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


RECORDS = [
    Record((1.5, "a", None, ["x", 2]), b"<body>\x00\xff</body>"),
    Record((), b""),
    Record(("\u00e9",), b"b" * 5000),
]


# -- the record format ----------------------------------------------------------------


def test_a_datetime_in_the_metadata_is_written_as_its_isoformat_text() -> None:
    # How a record carries its events' times (journal._message_meta leaves them datetimes).
    when = dt.datetime(2026, 11, 23, 10, 0, 5, 250, tzinfo=dt.UTC)
    ((record, _),) = spool.decode(spool.encode(Record((when, [["T", when, None]]), b""))).records
    assert record.meta == (when.isoformat(), [["T", when.isoformat(), None]])
    assert record.meta[0] == "2026-11-23T10:00:05.000250+00:00"


def test_a_value_a_record_cannot_hold_is_refused_when_written() -> None:
    with pytest.raises(TypeError, match="64-bit"):
        spool.encode(Record((2**64,), b""))
    with pytest.raises(TypeError, match="not JSON serializable"):
        spool.encode(Record((object(),), b""))


def test_a_record_as_earlier_releases_wrote_it_reads_the_same() -> None:
    # Before orjson, the standard json module wrote the metadata: ASCII, with \u escapes.
    # A segment left by such a release before an upgrade must read as it always did.
    meta = json.dumps([1.5, "caf\u00e9 \U0001f600", None, ["x", 2]], separators=(",", ":")).encode()
    assert meta.isascii()
    payload = struct.pack("<I", len(meta)) + meta + b"<body/>"
    data = struct.pack("<4sII", b"SRs1", len(payload), zlib.crc32(payload)) + payload
    ((record, end),) = spool.decode(data).records
    assert record == Record((1.5, "caf\u00e9 \U0001f600", None, ["x", 2]), b"<body/>")
    assert end == len(data)
    assert spool.decode(spool.encode(record)).records[0][0] == record, "and as this release writes it"


def test_records_read_back_as_written_with_the_offset_past_each() -> None:
    data = b"".join(spool.encode(record) for record in RECORDS)
    decoded = spool.decode(data)
    assert [record for record, _ in decoded.records] == RECORDS
    assert [end for _, end in decoded.records] == [
        len(b"".join(spool.encode(r) for r in RECORDS[: n + 1])) for n in range(3)
    ]
    assert (decoded.end, decoded.rest) == (len(data), "")


def test_a_record_cut_anywhere_is_incomplete_and_those_before_it_whole() -> None:
    first, second = spool.encode(RECORDS[0]), spool.encode(RECORDS[2])
    data = first + second
    for cut in range(len(first) + 1, len(data)):
        decoded = spool.decode(data[:cut])
        assert [record for record, _ in decoded.records] == [RECORDS[0]], cut
        assert (decoded.end, decoded.rest) == (len(first), "incomplete"), cut


def test_the_zeros_set_aside_after_the_records_end_them() -> None:
    data = spool.encode(RECORDS[0])
    for zeros in (1, 3, 4, 100):
        decoded = spool.decode(data + bytes(zeros))
        assert [record for record, _ in decoded.records] == [RECORDS[0]]
        assert (decoded.end, decoded.rest) == (len(data), "unwritten")


@pytest.mark.parametrize("where", ["magic", "length", "crc", "payload"])
def test_a_damaged_record_is_never_read_as_a_message(where: str) -> None:
    first, second = spool.encode(RECORDS[0]), bytearray(spool.encode(RECORDS[2]))
    at = {"magic": 0, "length": 7, "crc": 8, "payload": 100}[where]
    second[at] ^= 0x01 if where != "length" else 0x40  # a length past any record's
    decoded = spool.decode(first + bytes(second))
    assert [record for record, _ in decoded.records] == [RECORDS[0]]
    assert (decoded.end, decoded.rest) == (len(first), "damaged")


@pytest.mark.parametrize("harm", ["damaged", "zeroed"])
def test_records_past_a_damaged_or_zeroed_stretch_are_salvaged(harm: str) -> None:
    first, middle, last = (spool.encode(record) for record in RECORDS)
    hurt = bytes(len(middle)) if harm == "zeroed" else middle[:9] + b"?" + middle[10:]
    data = first + hurt + last + bytes(100)
    decoded = spool.decode(data)
    assert (decoded.end, decoded.rest) == (len(first), "unwritten" if harm == "zeroed" else "damaged")
    salvaged = spool.salvage(data[decoded.end :])
    assert salvaged.records == [(RECORDS[2], len(hurt) + len(last))]
    assert salvaged.skipped == len(hurt)


def test_salvage_reads_on_past_every_damaged_stretch_and_nothing_else() -> None:
    a, b, c = (spool.encode(record) for record in RECORDS)
    data = b"junk" + a + b + b"more junk" + c + bytes(50) + b"trailing junk"
    salvaged = spool.salvage(data)
    assert [record for record, _ in salvaged.records] == RECORDS
    assert [end for _, end in salvaged.records] == [
        4 + len(a),
        4 + len(a) + len(b),
        4 + len(a) + len(b) + 9 + len(c),
    ]
    assert salvaged.skipped == 4 + 9, "the junk before the records, not the zeros and junk after them"
    assert spool.salvage(bytes(1000)) == spool.Salvaged([], 0)


def test_salvage_takes_nothing_that_only_looks_like_a_record() -> None:
    real = spool.encode(RECORDS[0])
    fakes = [
        spool._MAGIC + b"\x10\x00\x00\x00" + b"\x00" * 4 + b"x" * 16,  # a header whose CRC-32 does not hold
        spool._MAGIC * 50,  # a length past any record's
        real[:-1] + bytes([real[-1] ^ 1]),  # a whole record with one bit flipped
        spool._MAGIC + real[4:12] + b"\xff" * (len(real) - 12),  # the right header over the wrong payload
    ]
    for fake in fakes:
        assert spool.salvage(b"!" + fake + bytes(64)).records == [], fake[:16]


_RECORDS = st.lists(
    st.builds(
        Record,
        # Integers as a record may hold them (see Record): within 64 bits.
        st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8)), max_size=4).map(tuple),
        st.binary(max_size=300),
    ),
    min_size=2,
    max_size=6,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(records=_RECORDS, data=st.data())
def test_whatever_stretch_of_one_record_is_harmed_every_other_record_is_read(
    records: list[Record], data: st.DataObject
) -> None:
    encoded = [spool.encode(record) for record in records]
    hurt = data.draw(st.integers(0, len(records) - 1))
    start = sum(map(len, encoded[:hurt]))
    at = start + data.draw(st.integers(0, len(encoded[hurt]) - 1))
    length = data.draw(st.integers(1, start + len(encoded[hurt]) - at))
    harm = data.draw(st.one_of(st.just(bytes(length)), st.binary(min_size=length, max_size=length)))
    segment = bytearray(b"".join(encoded) + bytes(64))
    segment[at : at + length] = harm
    decoded = spool.decode(bytes(segment))
    read = [record for record, _ in decoded.records]
    if decoded.rest:  # as the ingester does with a sealed segment (Journal._tidy_spool)
        read += [record for record, _ in spool.salvage(bytes(segment[decoded.end :])).records]
    unharmed = records[:hurt] + records[hurt + 1 :]
    assert read in (unharmed, records), "all but the harmed one, or all of them where the harm changed nothing"


# -- segments and ingest ----------------------------------------------------------------


def test_a_sync_sends_the_disk_the_pages_its_records_are_in_not_the_zeros_set_aside(tmp_path: Path) -> None:
    # Zeros set aside in one write became folios of up to 256 KiB in the page cache (Linux 6.18, ext4),
    # dirtied and written whole by the sync of every record in them: 74 KiB sent toward the disk a 6 KB
    # record over 2.4 MB of them, 15 KiB when written a page at a time (spool.write_zeros).
    writer = Spool(tmp_path / "spool")
    record = Record(("meta",), os.urandom(6000))
    writer.append([record])
    before = _disk_bytes_dirtied()
    for _ in range(400):  # past the first two PREALLOCATE stretches: where the folios grow is not the start
        writer.append([record])
    sent = _disk_bytes_dirtied() - before
    writer.close()
    if sent == 0:
        pytest.skip(f"{tmp_path} is not on a disk (tmpfs?): the kernel counts no bytes bound for one")
    # Each record's two or three pages, the page the one before it ended in, its share of the zeros.
    assert sent / 400 <= 32 * 1024, f"{sent / 400:,.0f} bytes bound for the disk a 6 KB record"


def _disk_bytes_dirtied() -> int:
    """Bytes this process has sent toward the disk (``write_bytes``: counted as pages are dirtied, folio by folio)."""
    return _io_count("write_bytes")


def _io_count(name: str) -> int:
    """One of this process's I/O counts, as the kernel keeps it (``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/self/io")


def test_appended_messages_reach_the_journal_when_it_ingests_them(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db").open()
    journal.append_many([(*message("A1", "A2"), T0), (*message("B1"), T0 + 1)])
    assert message_count(journal.path) == 0, "the receptor's path does not touch the journal itself"
    (segment,) = journal.spool.segments()
    assert segment.path.parent == tmp_path / "journal.db-spool"
    assert journal.ingest() == 2
    assert stored_assignments(journal) == ["A1", "A2", "B1"]
    assert journal.ingest() == 0
    assert segment.path.exists(), "its writer may still append to it"
    journal.spool.close()  # the writer leaves it: sealed, taken whole, so it goes
    assert journal.ingest() == 0
    assert not segment.path.exists()
    assert stored_assignments(journal) == ["A1", "A2", "B1"]


def test_a_deleted_segment_that_comes_back_is_not_taken_again(tmp_path: Path) -> None:
    # As after a power loss that undid its deletion but not the synced commit made before it.
    journal = Journal(tmp_path / "journal.db", durable=False)  # the dispatcher's
    journal.append_many([(*message("A"), T0)])
    journal.spool.close()
    (segment,) = journal.spool.segments()
    kept = segment.path.read_bytes()
    assert journal.ingest() == 1
    assert not segment.path.exists()
    segment.path.write_bytes(kept)
    assert journal.ingest() == 0
    assert not segment.path.exists()
    assert stored_assignments(journal) == ["A"]


def test_readers_see_spooled_messages_at_once(tmp_path: Path) -> None:
    writer, reader = Journal(tmp_path / "journal.db"), Journal(tmp_path / "journal.db")
    writer.append_many([(*message("A1", "A2"), T0)])
    assert reader.counts()["pending"] == 2
    assert reader.oldest_pending() == T0
    assert stored_assignments(reader) == ["A1", "A2"]


def test_readers_see_a_spooled_backlog_larger_than_one_turn_of_the_dispatcher(tmp_path: Path) -> None:
    # The dispatcher takes about spool.READ_BYTES of a segment per turn; a reader takes it all.
    writer, reader = Journal(tmp_path / "journal.db"), Journal(tmp_path / "journal.db")
    notification, arrival = message("A")
    padding = b"<!--" + b"x" * 200_000 + b"-->"  # a large body, as a spooled message may have
    count = spool.READ_BYTES // len(padding) * 3 + 1  # more than three turns' worth
    backlog = [(notification, Arrival(arrival.body + padding, request_id=f"r{n}"), T0 + n) for n in range(count)]
    writer.append_many(backlog)
    assert reader.counts()["pending"] == count
    assert message_count(reader.path) == count
    assert len(reader.events()) == count
    # The dispatcher's own turn stays bounded, so its transactions do.
    other = Journal(tmp_path / "other.db")
    other.append_many(backlog)
    first_turn = other.ingest()
    assert 0 < first_turn < count
    assert other.ingest(everything=True) == count - first_turn
    assert message_count(other.path) == count


def _append_at(path: str, times: list[float], label: str) -> None:
    journal = Journal(path)
    for number, at in enumerate(times):
        journal.append_many([(*message(f"{label}{number}"), at)])
    journal.close()


def test_messages_from_several_workers_are_ingested_in_arrival_order(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_append_at, args=(path, [T0 + 2 * n + offset for n in range(5)], label))
        for label, offset in (("even", 0), ("odd", 1))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    journal = Journal(path)
    assert len(journal.spool.segments()) == 2, "a segment per process"
    assert journal.ingest() == 10
    assert stored_assignments(journal) == [f"{label}{n}" for n in range(5) for label in ("even", "odd")]
    assert journal.spool.segments() == [], "both writers have left their segments: taken whole, they go"


def test_a_read_only_look_finds_the_oldest_spooled_message_and_moves_nothing(tmp_path: Path) -> None:
    # What a metrics scrape does: it must neither do the dispatcher's work nor wait for its lock.
    path = str(tmp_path / "journal.db")
    journal = Journal(path)
    assert journal.oldest_pending(ingest=False) is None
    journal.append_many([(*message("late"), T0 + 5)])
    child = multiprocessing.get_context("fork").Process(target=_append_at, args=(path, [T0 + 2, T0 + 9], "other"))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    with closing(sqlite3.connect(path)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held by someone else throughout
        assert journal.oldest_pending(ingest=False) == T0 + 2, "the oldest of either segment's first message"
        assert journal.counts(ingest=False)["pending"] == 0, "spooled messages count once they are taken in"
        holder.rollback()
    assert message_count(journal.path) == 0
    assert journal.ingest() == 3
    assert journal.oldest_pending(ingest=False) == T0 + 2, "from the journal now"
    assert journal.counts(ingest=False)["pending"] == 3


def test_a_process_that_forked_keeps_its_segment_and_the_child_gets_its_own(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    journal = Journal(path)
    journal.append_many([(*message("parent0"), T0)])
    child = multiprocessing.get_context("fork").Process(target=_append_at, args=(path, [T0 + 1], "child"))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    journal.append_many([(*message("parent1"), T0 + 2)])
    assert len(journal.spool.segments()) == 2
    assert journal.ingest() == 3
    assert stored_assignments(journal) == ["parent0", "child0", "parent1"]


def _say_ready_and_wait(ready: int, reader: int) -> None:
    os.write(ready, b"r")  # the child runs: what happens at a fork is done
    os.read(reader, 1)


def test_a_forked_child_does_not_keep_its_parents_segment_from_being_sealed(tmp_path: Path) -> None:
    # The child's copy of the segment's descriptor would share the parent's lock:
    # once the parent leaves the segment, it must be sealed, whatever the child does.
    path = str(tmp_path / "journal.db")
    journal = Journal(path)
    journal.append_many([(*message("parent0"), T0)])
    (segment,) = journal.spool.segments()
    reader, writer = os.pipe()
    ready_reader, ready = os.pipe()
    child = multiprocessing.get_context("fork").Process(target=_say_ready_and_wait, args=(ready, reader))
    child.start()
    try:
        assert os.read(ready_reader, 1) == b"r"
        journal.close()  # the parent leaves its segment; the child lives on
        with Spool.sealed(segment) as sealed:
            assert sealed, "the child still holds the parent's segment lock"
        assert journal.ingest() == 1
        assert journal.spool.segments() == [], "taken whole and sealed, it is deleted"
        assert stored_assignments(journal) == ["parent0"]
    finally:
        os.write(writer, b"x")
        child.join(60)
        for fd in (reader, writer, ready_reader, ready):
            os.close(fd)
    assert child.exitcode == 0


def test_a_child_forked_while_another_thread_appends_can_append(tmp_path: Path) -> None:
    # A thread lock held in the parent at the fork would be held for ever in the child.
    path = str(tmp_path / "journal.db")
    journal = Journal(path)
    journal.append_many([(*message("parent0"), T0)])
    with journal.spool._lock:  # another thread of the parent, in the middle of an append
        child = multiprocessing.get_context("fork").Process(target=_append_with_journal, args=(journal,))
        child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the child's append waited for a lock only the parent's thread could release")
    assert child.exitcode == 0
    journal.close()
    assert journal.ingest() == 2
    assert stored_assignments(journal) == ["parent0", "child0"]


def _append_with_journal(journal: Journal) -> None:
    journal.append_many([(*message("child0"), T0 + 1)])
    journal.close()


def test_each_message_is_ingested_once_whoever_ingests_and_whenever_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal.db"
    worker, first, second = Journal(path), Journal(path), Journal(path)
    worker.append_many([(*message("A"), T0)])
    # An ingest that fails before it commits (here: the journal refuses the insert) takes nothing...
    original = Journal._append

    def refuse(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> list[int]:
        original(conn, rows)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Journal, "_append", staticmethod(refuse))
    with pytest.raises(JournalError, match="disk is full"):
        first.ingest()
    monkeypatch.setattr(Journal, "_append", staticmethod(original))
    assert message_count(path) == 0
    # ...and the next one, in any process, takes it; so far, every ingester knows.
    worker.append_many([(*message("B"), T0 + 1)])
    assert first.ingest() == 2
    assert second.ingest() == 0
    worker.append_many([(*message("C"), T0 + 2)])
    assert second.ingest() == 1
    assert first.ingest() == 0
    assert stored_assignments(first) == ["A", "B", "C"]


def test_full_segments_are_left_for_new_ones_and_deleted_once_ingested(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.spool = Spool(journal.spool.directory, segment_bytes=1)  # every append fills its segment
    for number in range(4):
        journal.append_many([(*message(f"M{number}"), T0 + number)])
    assert len(journal.spool.segments()) == 4
    assert journal.ingest() == 4
    assert journal.spool.segments() == [], "all four were left by their writer: sealed, and taken whole"
    assert stored_assignments(journal) == ["M0", "M1", "M2", "M3"]


def _append_under_a_file_size_limit(
    path: str, limit: int, preallocate: int, results: multiprocessing.Queue[str]
) -> None:
    """Append one message at a time until one fails and two more have been tried.

    Puts each outcome and the bytes the process wrote meanwhile (whatever
    the calls, the kernel's count) in ``results``.
    """
    # The kernel refuses writes past RLIMIT_FSIZE (EFBIG): a real failed write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    journal = Journal(path)
    journal.spool = Spool(journal.spool.directory, preallocate=preallocate)
    outcomes: list[str] = []
    written = _bytes_written()
    for number in range(10_000):
        try:
            journal.append_many([(*message(f"M{number}"), T0 + number)])
            outcomes.append(f"M{number}")
        except JournalError as exc:
            outcomes.append(f"failed: {exc}")
        if len(outcomes) > 2 and outcomes[-3].startswith("failed"):
            break
    results.put(repr((outcomes, _bytes_written() - written)))


def _bytes_written() -> int:
    """What this process has written so far (``wchar``: every byte a write call took, to any file)."""
    return _io_count("wchar")


def _outcomes_under_a_file_size_limit(path: str, limit: int, preallocate: int) -> tuple[list[str], int]:
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_append_under_a_file_size_limit, args=(path, limit, preallocate, results))
    child.start()
    outcomes, written = eval(results.get(timeout=120))  # noqa: S307 (our own child's repr of a list of str and an int)
    child.join(60)
    return outcomes, written


def test_a_write_that_fails_part_way_is_cut_off_and_the_next_append_starts_a_new_segment(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    size = len(spool.encode(_record_of(message("M0"))))
    # Room for two records and part of a third in each segment; no space set aside ahead, so that
    # the records' own write is the one that fails.
    outcomes, _ = _outcomes_under_a_file_size_limit(path, 2 * size + size // 2, preallocate=1)
    assert outcomes[:2] == ["M0", "M1"]
    assert outcomes[2].startswith("failed: the journal could not store the messages: could not write the spool segment")
    assert outcomes[3:5] == ["M3", "M4"], "a new segment takes the next ones"
    journal = Journal(path)
    accepted = [outcome for outcome in outcomes if not outcome.startswith("failed")]
    assert journal.ingest() == len(accepted)
    assert stored_assignments(journal) == accepted, "what was acknowledged, and nothing of the failed write"
    assert not (journal.spool.directory / spool.DAMAGED).exists()
    assert journal.spool.segments() == []


def test_a_segment_with_no_room_left_for_a_record_is_left_whole(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    outcomes, _ = _outcomes_under_a_file_size_limit(path, spool.PREALLOCATE + 1000, spool.PREALLOCATE)
    failed = [outcome for outcome in outcomes if outcome.startswith("failed")]
    assert len(failed) == 1, failed
    assert "File too large" in failed[0]
    assert outcomes[-3:-2] == failed, "the next two went to a new segment"
    journal = Journal(path)
    accepted = [outcome for outcome in outcomes if not outcome.startswith("failed")]
    assert journal.ingest() == len(accepted)
    assert stored_assignments(journal) == accepted
    assert journal.spool.segments() == []
    assert not (journal.spool.directory / spool.DAMAGED).exists()


def test_messages_that_fit_are_taken_where_no_space_can_be_set_aside(tmp_path: Path) -> None:
    # As on a nearly full disk: here a file size limit below the space set aside at a time.
    path = str(tmp_path / "journal.db")
    size = len(spool.encode(_record_of(message("M0000"))))  # as large as any record below
    limit = spool.PREALLOCATE // 4
    outcomes, written = _outcomes_under_a_file_size_limit(path, limit, spool.PREALLOCATE)
    failed = [outcome for outcome in outcomes if outcome.startswith("failed")]
    assert len(failed) == 1, failed
    assert "File too large" in failed[0]
    assert outcomes.index(failed[0]) >= limit // size, "every message that fitted was taken"
    # A try to set space aside fills the segment with zeros up to the limit before it fails. Once
    # per segment here (the records never grow by PREALLOCATE): zeros and records in the first,
    # zeros in the second, 3 limits in all. Tried before every message, it was over 100.
    assert written < 4 * limit, f"{written} bytes written for {limit} bytes of room: space set aside again and again"
    assert outcomes[-3:-2] == failed, "the next two went to a new segment"
    journal = Journal(path)
    accepted = [outcome for outcome in outcomes if not outcome.startswith("failed")]
    assert journal.ingest() == len(accepted)
    assert stored_assignments(journal) == accepted
    assert not (journal.spool.directory / spool.DAMAGED).exists()


def _record_of(parsed: tuple[Notification, Arrival]) -> Record:
    from soapreceptor.journal import _spooled  # noqa: PLC0415 (the journal's own encoding)

    return _spooled(*parsed, T0)


def test_a_record_spooled_with_its_events_as_json_text_is_ingested_as_before(tmp_path: Path) -> None:
    # Records spooled before the events went in as a list (a segment left by the
    # release before an upgrade) hold them as JSON text: both read the same.
    path = tmp_path / "journal.db"
    current = _record_of(message("NEW"))
    earlier = _record_of(message("OLD"))
    events_text = json.dumps(earlier.meta[-1], separators=(",", ":"), default=lambda time: time.isoformat())
    earlier = Record((*earlier.meta[:-1], events_text), earlier.body)
    journal = Journal(path).open()
    journal.spool.append([earlier, current])
    journal.close()
    journal = Journal(path)
    assert journal.ingest() == 2
    assert stored_assignments(journal) == ["OLD", "NEW"]
    events_texts = _events_column(path)
    assert events_texts[0] == events_texts[1].replace("NEW", "OLD")


def _events_column(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [str(text) for (text,) in conn.execute("SELECT events FROM messages ORDER BY id")]


def test_a_sealed_segment_that_ends_in_damage_is_set_aside_once_its_whole_records_are_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.append_many([(*message("A"), T0), (*message("B"), T0 + 1)])
    journal.spool.close()
    (segment,) = journal.spool.segments()
    with open(segment.path, "r+b") as file:
        file.seek(spool.decode(file.read()).end)  # where the zeros set aside begin
        file.write(b"not a record")
    with caplog.at_level(logging.ERROR, logger="soapreceptor.journal"):
        assert journal.ingest() == 2
        assert journal.ingest() == 0
    assert stored_assignments(journal) == ["A", "B"]
    assert journal.spool.segments() == []
    aside = journal.spool.directory / spool.DAMAGED / segment.name
    assert b"not a record" in aside.read_bytes(), "kept, for a person to look at"
    assert "holds bytes that are not a whole record (damaged) from offset" in caplog.text
    assert "every record before them is in the journal, and no whole record follows them" in caplog.text


_KEEP = Spool.keep


def _dies_after_keeping(self: Spool, segment: Segment) -> Path:
    _KEEP(self, segment)
    raise KeyboardInterrupt("the process dies between keeping the segment and the salvage's commit")


def _dies_before_removing(self: Spool, segment: Segment) -> None:
    raise KeyboardInterrupt("the process dies between the salvage's commit and removing the segment")


def _sealed_segment_of(journal: Journal, *assignments: str) -> tuple[Segment, list[int]]:
    """A sealed segment holding one message for each of ``assignments``, and where each record starts."""
    journal.append_many([(*message(a), T0 + n) for n, a in enumerate(assignments)])
    journal.spool.close()
    (segment,) = journal.spool.segments()
    ends = [end for _, end in spool.decode(segment.path.read_bytes()).records]
    return segment, [0, *ends[:-1]]


@pytest.mark.parametrize("harm", ["damaged", "zeroed"])
def test_messages_after_damage_in_a_sealed_segment_reach_the_journal_before_it_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, harm: str
) -> None:
    # Each was answered 200: a stretch of the disk coming back damaged (or as
    # zeros) must not lose the messages after it, nor delete them with it.
    journal = Journal(tmp_path / "journal.db")
    segment, starts = _sealed_segment_of(journal, "A", "B", "C", "D")
    with open(segment.path, "r+b") as file:
        file.seek(starts[1])
        file.write(bytes(20) if harm == "zeroed" else b"\xde\xad")
    harmed = segment.path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="soapreceptor.journal"):
        assert journal.ingest() == 3
        assert journal.ingest() == 0
    assert stored_assignments(journal) == ["A", "C", "D"]
    assert journal.spool.segments() == []
    aside = journal.spool.directory / spool.DAMAGED / segment.name
    assert aside.read_bytes() == harmed, "kept as it was, for a person to look at"
    what = "zeros" if harm == "zeroed" else "damaged"
    assert f"holds bytes that are not a whole record ({what}) from offset {starts[1]} on" in caplog.text
    assert "every record before them is in the journal, and so are the 2 whole records found after them" in caplog.text
    assert f"({starts[2] - starts[1]} bytes passed over)" in caplog.text


@pytest.mark.parametrize(
    ("crash", "dies", "salvaged_after"),
    [("after keeping it", _dies_after_keeping, 1), ("after the commit", _dies_before_removing, 0)],
)
def test_a_salvage_cut_short_by_a_crash_takes_no_message_twice_and_keeps_the_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: str, dies: object, salvaged_after: int
) -> None:
    journal = Journal(tmp_path / "journal.db")
    segment, starts = _sealed_segment_of(journal, "A", "B", "C")
    with open(segment.path, "r+b") as file:
        file.seek(starts[1])
        file.write(b"\xde\xad")
    harmed = segment.path.read_bytes()

    with monkeypatch.context() as patch:
        patch.setattr(Spool, "keep" if dies is _dies_after_keeping else "remove", dies)
        with pytest.raises(KeyboardInterrupt):
            journal.ingest()
    journal.close()
    again = Journal(tmp_path / "journal.db")  # the next process: nothing of the last one's in memory
    assert again.ingest() == salvaged_after, crash
    assert stored_assignments(again) == ["A", "C"]
    assert again.spool.segments() == [], "nothing left in it to take: it goes"
    assert message_count(again.path) == 2
    assert (again.spool.directory / spool.DAMAGED / segment.name).read_bytes() == harmed, "and it is kept"


def test_an_ingester_that_looked_before_a_salvage_does_not_take_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal.db"
    first, second = Journal(path), Journal(path)
    segment, starts = _sealed_segment_of(first, "A", "B", "C")
    with open(segment.path, "r+b") as file:
        file.seek(starts[1])
        file.write(bytes(20))  # zeros: to a quick look, the end of the records
    # ``second`` takes A and stops at the zeros; the segment's lock is held meanwhile (as another
    # ingester tidying it would), so it leaves the segment for later with that offset in mind.
    with Spool.sealed(segment) as held:
        assert held
        assert second.ingest() == 1
    # ``first`` salvages C, and dies before removing the segment.
    with monkeypatch.context() as patch:
        patch.setattr(Spool, "remove", _dies_before_removing)
        with pytest.raises(KeyboardInterrupt):
            first.ingest()
    assert second.ingest() == 0
    assert second.spool.segments() == [segment]
    assert second.ingest() == 0
    assert second.spool.segments() == [], "the next turn goes on from where the salvage left it"
    assert stored_assignments(second) == ["A", "C"]
    assert message_count(path) == 2


def _unreadable(kind: str) -> Record:
    """A whole record (its CRC holds) that is not a message this release can read, of ``kind``."""
    good = _record_of(message("X"))
    if kind == "newer":  # a segment written by a later release, read after a downgrade
        return Record((*good.meta, "a value this release does not know"), good.body)
    if kind == "event time":  # what a bug could write: the dispatcher could never queue it
        return Record((*good.meta[:-2], 1, [["AssignmentAccepted", "yesterday", None, None, None]]), good.body)
    if kind == "event count":
        return Record((*good.meta[:-2], 2, good.meta[-1]), good.body)
    if kind == "events text":  # events as JSON text, as records spooled by earlier releases hold them
        return Record((*good.meta[:-1], "[not JSON"), good.body)
    assert kind == "no version"
    return Record((*good.meta[:4], None, *good.meta[5:]), good.body)


UNREADABLE = ["newer", "event time", "event count", "events text", "no version"]


@pytest.mark.parametrize("kind", UNREADABLE)
def test_a_record_the_journal_cannot_read_holds_up_no_other_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    # It used to stop every ingest at it, for every segment (or, past the
    # ingest, every queueing): each turn failed, and no message accepted after
    # it was ever delivered.
    journal = Journal(tmp_path / "journal.db")
    unreadable = _unreadable(kind)
    journal.spool.append([_record_of(message("A")), unreadable, _record_of(message("B"))])
    other = Spool(journal.spool.directory)  # another worker's segment, still being written too
    other.append([_record_of(message("C"))])
    segment = journal.spool.segments()[0]
    where = len(spool.encode(_record_of(message("A"))))
    with caplog.at_level(logging.ERROR, logger="soapreceptor.journal"):
        assert journal.ingest() == 3, "A and B, around it, and C in the other segment: at once"
        assert journal.ingest() == 0
    assert sorted(stored_assignments(journal)) == ["A", "B", "C"]
    assert f"spool segment {segment.name} holds a record at offset {where} that is not a message" in caplog.text
    assert caplog.text.count("is not a message") == 1, "skipped once, and said once"
    kept = journal.spool.directory / spool.DAMAGED / segment.name
    assert spool.encode(unreadable) in kept.read_bytes(), "kept, for a person (or the release that wrote it)"
    # Once its writer has left it and it is all in the journal, the segment goes; the copy kept stays.
    journal.spool.close()
    other.close()
    assert journal.ingest() == 0
    assert journal.spool.segments() == []
    assert spool.encode(unreadable) in kept.read_bytes()
    assert message_count(journal.path) == 3


def test_a_record_the_journal_cannot_read_past_damage_is_skipped_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "journal.db")
    unreadable = _unreadable("newer")
    journal.spool.append([_record_of(message(a)) for a in "AB"] + [unreadable, _record_of(message("C"))])
    journal.spool.close()
    (segment,) = journal.spool.segments()
    b_starts = spool.decode(segment.path.read_bytes()).records[0][1]
    with open(segment.path, "r+b") as file:
        file.seek(b_starts)
        file.write(b"\xde\xad")
    with caplog.at_level(logging.ERROR, logger="soapreceptor.journal"):
        assert journal.ingest() == 2
    assert stored_assignments(journal) == ["A", "C"]
    assert journal.spool.segments() == []
    assert spool.encode(unreadable) in (journal.spool.directory / spool.DAMAGED / segment.name).read_bytes()
    assert "and so is the whole record found after them" in caplog.text
    assert "; 1 whole record after them is not a message this release can read" in caplog.text


def test_a_record_the_journal_cannot_read_is_not_the_oldest_message_waiting(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    newer = _unreadable("newer")
    journal.spool.append([Record((T0 - 50, *newer.meta[1:]), newer.body), _record_of(message("A"))])
    assert journal.oldest_pending(ingest=False) == T0


def test_a_spool_that_cannot_be_read_is_a_journal_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The dispatcher waits and tries again after a JournalError; anything else ended it.
    journal = Journal(tmp_path / "journal.db")
    journal.append_many([(*message("A"), T0)])

    def unreadable(segment: Segment, offset: int, limit: int = spool.READ_BYTES) -> spool.Decoded:
        raise spool.SpoolError(f"could not read the spool segment {segment.path}: [Errno 5] Input/output error")

    monkeypatch.setattr(Spool, "read", staticmethod(unreadable))
    with pytest.raises(JournalError, match="could not take in its spool: could not read the spool segment"):
        journal.ingest()


@pytest.mark.parametrize("errno_name", ["EPERM", "EOPNOTSUPP"])
def test_a_segment_is_kept_as_a_copy_where_there_are_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_name: str
) -> None:
    import errno  # noqa: PLC0415

    def no_links(source: object, target: object) -> None:
        raise OSError(getattr(errno, errno_name), "Operation not permitted")

    journal = Journal(tmp_path / "journal.db")
    journal.spool.append([_record_of(message("A"))])
    (segment,) = journal.spool.segments()
    monkeypatch.setattr(os, "link", no_links)
    kept = journal.spool.keep(segment)
    assert kept.read_bytes() == segment.path.read_bytes()
    assert not os.path.samefile(kept, segment.path)
    journal.spool.append([_record_of(message("B"))])
    assert journal.spool.keep(segment) == kept
    assert kept.read_bytes() == segment.path.read_bytes(), "kept again: it had grown"
    assert sorted(path.name for path in kept.parent.iterdir()) == [segment.name], "no partial copy left"


def test_a_segment_kept_twice_is_one_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.spool.append([_record_of(message("A"))])
    (segment,) = journal.spool.segments()
    kept = journal.spool.keep(segment)
    assert journal.spool.keep(segment) == kept
    assert os.path.samefile(kept, segment.path)


def test_a_record_its_writer_is_still_writing_waits_for_the_rest(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    directory = journal.spool.directory
    directory.mkdir()
    data = spool.encode(_record_of(message("A")))
    fd = os.open(directory / f"{time.time_ns():020d}-1{spool.SUFFIX}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a writer at work
        os.write(fd, data[:100])
        assert journal.ingest() == 0
        assert journal.spool.segments() != [], "not set aside: its writer is still there"
        os.write(fd, data[100:])
        assert journal.ingest() == 1
    finally:
        os.close(fd)
    assert stored_assignments(journal) == ["A"]


def test_a_segment_whose_writer_died_while_creating_it_is_removed_when_old(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    young, old = directory / "2-1.new", directory / "1-1.new"
    young.touch()
    old.touch()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    Spool(directory).remove_stale_creations()
    assert (young.exists(), old.exists()) == (True, False)


def test_an_unwritable_spool_is_refused_and_said_where(tmp_path: Path) -> None:
    (tmp_path / "journal.db-spool").write_text("a file, not a directory")
    journal = Journal(tmp_path / "journal.db")
    with pytest.raises(JournalError, match=r"journal\.db-spool"):
        journal.append_many([(*message("A"), T0)])
    with pytest.raises(JournalError, match=r"journal\.db-spool"):
        journal.check_writable()
    with pytest.raises(JournalError, match=r"journal\.db-spool"):
        journal.check_accepting()


def test_segments_are_found_oldest_first_and_a_missing_spool_has_none(tmp_path: Path) -> None:
    assert Spool(tmp_path / "nowhere").segments() == []
    directory = tmp_path / "spool"
    directory.mkdir()
    for name in ("00000000000000000002-9.seg", "00000000000000000001-9.seg", "x.new"):
        (directory / name).touch()
    (directory / spool.DAMAGED).mkdir()
    assert [s.name for s in Spool(directory).segments()] == ["00000000000000000001-9.seg", "00000000000000000002-9.seg"]
    assert Spool.read(Segment(directory / "gone.seg", 10), 0).records == []
