"""Group commit: concurrent appends share commits, each returns only once its own is stored, failures stay apart.

Real journals on real files; the only thing arranged is when a commit may
finish, so that requests pile up behind it as they do under load.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from soapreceptor import metrics, wire
from soapreceptor.group_commit import GroupCommit
from soapreceptor.journal import Arrival, Journal, JournalError
from soapreceptor.model import Notification
from tests.support import ACCEPTED_EVENT, amazon_envelope, wait_for

T0 = 1_000_000_000.0
Message = tuple[Notification, Arrival, float]


def message(assignment: str) -> Message:
    body = amazon_envelope(events=[{**ACCEPTED_EVENT, "AssignmentId": assignment}])
    return wire.parse_notify(body), Arrival(body=body, request_id=f"r-{assignment}", remote_addr="127.0.0.1"), T0


def assignment(item: Message) -> str:
    return str(item[0].events[0].assignment_id)


def stored(journal: Journal) -> list[str]:
    return [str(row.event.assignment_id) for row in journal.events()]


class Commits:
    """The journal's append_many, recorded, with the first commit held until ``release`` (and ``refuse`` applied)."""

    def __init__(self, journal: Journal, monkeypatch: pytest.MonkeyPatch, refuse: Callable[[str], bool]) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self._append_many = journal.append_many
        self._refuse = refuse
        monkeypatch.setattr(journal, "append_many", self)

    def __call__(self, messages: Sequence[Message]) -> None:
        names = [assignment(item) for item in messages]
        self.batches.append(names)
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(60), "the test never let the first commit finish"
        if any(self._refuse(name) for name in names):
            raise JournalError(f"refused {names}")
        self._append_many(messages)


def append_in_threads(commits: GroupCommit, names: list[str]) -> tuple[dict[str, str], list[threading.Thread]]:
    """Start one thread per message; each records "ok", the journal's error or a bug once its append returns."""
    outcome: dict[str, str] = {}

    def append(name: str) -> None:
        try:
            commits.append(*message(name))
        except JournalError as exc:
            outcome[name] = f"error: {exc}"
        except RuntimeError as exc:
            outcome[name] = f"bug: {exc}"
        else:
            outcome[name] = "ok"

    threads = [threading.Thread(target=append, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    return outcome, threads


def test_appends_that_arrive_during_a_commit_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal.db")
    recorder = Commits(journal, monkeypatch, refuse=lambda name: False)
    commits = GroupCommit(journal)
    first, first_threads = append_in_threads(commits, ["lead"])
    assert recorder.entered.wait(60)
    later, later_threads = append_in_threads(commits, [f"w{n}" for n in range(5)])
    assert wait_for(lambda: len(commits._queue) == 5, "the five appends to queue behind the commit")
    assert first == {}, "no append returns before its commit has"
    assert later == {}, "no append returns before its commit has"
    recorder.release.set()
    for thread in first_threads + later_threads:
        thread.join(60)
    assert first == {"lead": "ok"}
    assert later == {f"w{n}": "ok" for n in range(5)}
    assert recorder.batches[0] == ["lead"]
    assert sorted(recorder.batches[1]) == [f"w{n}" for n in range(5)], "one commit for all five"
    assert len(recorder.batches) == 2
    assert sorted(stored(journal)) == sorted(["lead", *(f"w{n}" for n in range(5))])


def test_a_message_the_journal_refuses_does_not_take_its_batch_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal.db")
    recorder = Commits(journal, monkeypatch, refuse=lambda name: name == "bad")
    commits = GroupCommit(journal)
    _, first_threads = append_in_threads(commits, ["lead"])
    assert recorder.entered.wait(60)
    outcome, threads = append_in_threads(commits, ["good1", "bad", "good2"])
    assert wait_for(lambda: len(commits._queue) == 3, "the three appends to queue behind the commit")
    recorder.release.set()
    for thread in first_threads + threads:
        thread.join(60)
    assert outcome["good1"] == outcome["good2"] == "ok"
    assert outcome["bad"].startswith("error: refused ['bad']"), outcome["bad"]
    # The shared batch failed, so each of its messages was committed alone.
    assert sorted(recorder.batches[1]) == ["bad", "good1", "good2"]
    assert sorted(map(tuple, recorder.batches[2:])) == [("bad",), ("good1",), ("good2",)]
    assert sorted(stored(journal)) == ["good1", "good2", "lead"]


def test_a_commit_that_breaks_leaves_no_one_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not the journal refusing but a bug: whoever led that commit gets the error, the rest of
    # its batch are told their message was not stored, and the next append commits as usual.
    journal = Journal(tmp_path / "journal.db")
    recorder = Commits(journal, monkeypatch, refuse=lambda name: False)
    original = recorder.__call__

    def breaking(messages: Sequence[Message]) -> None:
        if len(recorder.batches) == 1:  # the second commit
            recorder.batches.append([assignment(item) for item in messages])
            raise RuntimeError("a bug in the commit")
        original(messages)

    monkeypatch.setattr(journal, "append_many", breaking)
    commits = GroupCommit(journal)
    first, first_threads = append_in_threads(commits, ["lead"])
    assert recorder.entered.wait(60)
    outcome, threads = append_in_threads(commits, [f"w{n}" for n in range(3)])
    assert wait_for(lambda: len(commits._queue) == 3, "the three appends to queue behind the commit")
    recorder.release.set()
    for thread in first_threads + threads:
        thread.join(60)
        assert not thread.is_alive(), "an append still waits for a commit that broke"
    assert first == {"lead": "ok"}
    assert sorted(outcome.values()) == [
        "bug: a bug in the commit",
        "error: the journal write was interrupted; see the log",
        "error: the journal write was interrupted; see the log",
    ]
    commits.append(*message("after"))
    assert stored(journal) == ["lead", "after"]


def test_each_commit_past_the_stall_bound_adds_its_excess_to_the_stalled_seconds(tmp_path: Path) -> None:
    # The clock is the test's: each commit reads it before and after, and "takes" what the test says.
    durations = iter([0.003, 0.025, metrics.STALL_AFTER, 0.310])
    now = [0.0]
    reads = 0

    def clock() -> float:
        nonlocal reads
        reads += 1
        if reads % 2 == 0:  # the read after a commit
            now[0] += next(durations)
        return now[0]

    commits = GroupCommit(Journal(tmp_path / "journal.db"), clock=clock)
    stalled = metrics.get().journal_stalled
    before = stalled._value.get()
    for name in ("fast", "slow", "at-the-bound", "stalled"):
        commits.append(*message(name))
    # 25 ms is 15 ms past the bound, 310 ms is 300 ms past it; 3 ms and the bound itself add nothing.
    assert stalled._value.get() - before == pytest.approx(0.015 + 0.300)
    assert reads == 8, "one clock read before and one after each commit"
