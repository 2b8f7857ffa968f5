"""Durability through a real gunicorn (deploy/gunicorn.conf.py, 2 workers) on loopback, with a real SQLite journal.

What is proved here is the receptor's promise to MTurk, which sends each
notification once and never retries: an answer 200 means the events are in
the journal, and every journaled event reaches the hook in the end (retried,
dead-lettered and redelivered by hand if need be), whatever the hook does,
whatever kills the server, and however many dispatchers run. Every wait
polls (``support.wait_for``) against ``support.DEADLINE``; every process a
test starts, the test stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from soapreceptor import sign
from soapreceptor.journal import Journal, StoredEvent
from soapreceptor.sender import EventSpec, Sender
from soapreceptor.timestamps import format_timestamp
from tests import support
from tests.durability_hooks import FLAKY_PREFIX, RELEASE_DEADLINE, event_key
from tests.support import (
    DEADLINE,
    KEY_2,
    Proc,
    Server,
    amazon_envelope,
    kill_all,
    post,
    process_tree,
    wait_for,
    wait_gone,
)

ServerFactory = Callable[..., Server]
CLI = [sys.executable, "-m", "soapreceptor.cli"]


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """The test's journal file (created by the first server), read from the test process."""
    opened = Journal(tmp_path / "journal.db")
    yield opened
    opened.close()


def receptor_env(journal: Journal, **settings: str) -> dict[str, str]:
    """Server (and CLI) settings that put the journal at ``journal.path``, plus ``settings``."""
    return {"SOAPRECEPTOR_JOURNAL": str(journal.path), **settings}


def amazon_event(assignment_id: str) -> dict[str, str]:
    """Amazon's example event (for ``amazon_envelope``), told apart by its AssignmentId."""
    return {**support.ACCEPTED_EVENT, "EventType": "AssignmentSubmitted", "AssignmentId": assignment_id}


def spec(assignment_id: str) -> EventSpec:
    """An event for the zeep sender, told apart by its AssignmentId."""
    return EventSpec("AssignmentSubmitted", "HT-DURABLE", f"HIT-{assignment_id}", assignment_id)


def fresh_envelope(events: Iterable[Mapping[str, str]]) -> bytes:
    """An Amazon-shaped message with a current Timestamp, signed with the servers' key."""
    timestamp = format_timestamp(dt.datetime.now(dt.UTC))
    return amazon_envelope(timestamp=timestamp, signature=sign(KEY_2, timestamp), events=list(events))


def read_records(path: Path) -> list[dict[str, Any]]:
    """What a recording hook wrote to ``path`` (JSON lines), in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def times_recorded(records: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """How many times the hook recorded each AssignmentId."""
    return Counter(str(record["assignment_id"]) for record in records)


def wait_settled(journal: Journal, what: str) -> dict[str, int]:
    """Wait until no event in the journal is pending; return the count of events in each state."""
    counts: dict[str, int] = wait_for(lambda: (c := journal.counts())["pending"] == 0 and c, what)
    return counts


def by_assignment(events: Iterable[StoredEvent]) -> dict[str, StoredEvent]:
    return {str(stored.event.assignment_id): stored for stored in events}


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``soapreceptor ARGS`` as an operator would on the server's host: same settings, same journal."""
    return subprocess.run(
        [*CLI, *args],
        env=server.full_env(),
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def free_port() -> int:
    """A loopback port nobody listens on right now (the crash test's servers all take it in turn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Gate:
    """The files ``tests.durability_hooks:wait_for_release`` marks (entered) and waits for (release)."""

    release: Path
    entered: Path

    @classmethod
    def make(cls, directory: Path) -> Gate:
        gate = cls(directory / "release", directory / "entered")
        gate.entered.mkdir()
        return gate

    def settings(self) -> dict[str, str]:
        """Server settings that make the hook wait at this gate (within a hook time limit that outlasts it)."""
        return {
            "SOAPRECEPTOR_HOOK": "tests.durability_hooks:wait_for_release",
            "SOAPRECEPTOR_TEST_RELEASE": str(self.release),
            "SOAPRECEPTOR_TEST_ENTERED": str(self.entered),
            "SOAPRECEPTOR_HOOK_TIMEOUT": str(RELEASE_DEADLINE + 60),
        }

    def held(self) -> int:
        """How many different events the hook has started on (and, until :meth:`open`, is blocked on)."""
        return len(list(self.entered.iterdir()))

    def open(self) -> None:
        self.release.touch()


def stop_all(processes: Iterable[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM each process still running, then wait for all; returns their exit statuses."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=DEADLINE))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait(timeout=DEADLINE))
    return codes


# --- 1. retries -------------------------------------------------------------------------------------


def test_a_flaky_hook_is_retried_until_every_event_is_delivered_exactly_once(
    server_factory: ServerFactory, journal: Journal, tmp_path: Path
) -> None:
    """A hook failing the first 2 attempts of some events: those take 3 attempts, the others 1, each succeeds once.

    The journal's attempt counts match the hook's own count of calls, and a
    failing event does not hold up the ones behind it.
    """
    calls = tmp_path / "calls"
    calls.mkdir()
    server = server_factory(
        receptor_env(
            journal,
            SOAPRECEPTOR_HOOK="tests.durability_hooks:flaky",
            SOAPRECEPTOR_TEST_CALLS=str(calls),
            SOAPRECEPTOR_TEST_FAILURES="2",
            SOAPRECEPTOR_RETRY_SCHEDULE="0.2,0.2,0.2,0.2",
        )
    )
    batches = [[f"{FLAKY_PREFIX}-1", "STEADY-1", f"{FLAKY_PREFIX}-2", "STEADY-2"], ["STEADY-3", f"{FLAKY_PREFIX}-3"]]
    sender = Sender(server.url, KEY_2)
    for batch in batches:
        result = sender.send([spec(assignment) for assignment in batch])
        assert result.accepted, result
    everyone = [assignment for batch in batches for assignment in batch]

    counts = wait_settled(journal, "every event to be delivered")

    assert counts == {"pending": 0, "delivered": len(everyone), "dead": 0, "duplicate": 0}
    assert times_recorded(server.events()) == dict.fromkeys(everyone, 1)
    stored = by_assignment(journal.events())
    expected_attempts = {a: 3 if a.startswith(FLAKY_PREFIX) else 1 for a in everyone}
    assert {a: (s.state, s.attempts) for a, s in stored.items()} == {
        a: ("delivered", attempts) for a, attempts in expected_attempts.items()
    }
    hook_calls = {a: int((calls / event_key(s.event)).read_text()) for a, s in stored.items()}
    assert hook_calls == expected_attempts
    for assignment, event in stored.items():
        if assignment.startswith(FLAKY_PREFIX):
            assert event.last_error is not None
            assert "FlakyHookError: attempt 2" in event.last_error
        else:
            assert event.last_error is None


# --- 2. dead letters and the operators' commands ---------------------------------------------------


def test_a_dead_letter_is_listed_redelivered_by_hand_and_then_purged(
    server_factory: ServerFactory, journal: Journal
) -> None:
    """An always-failing hook leaves the event dead after 1 + 2 retries, with the exception in last_error.

    ``soapreceptor events --state dead`` lists it; after the hook is fixed (a
    server with the recording hook on the same journal) the dead event stays
    dead while new events flow, until ``redeliver --dead`` brings it to the
    hook; ``purge`` then removes the delivered events. Unknown ids and bad
    durations exit 2 with a message and change nothing.
    """
    env = receptor_env(journal, SOAPRECEPTOR_RETRY_SCHEDULE="0.1,0.1")
    broken = server_factory({**env, "SOAPRECEPTOR_HOOK": "tests.durability_hooks:refuse"}, name="broken")
    assert post(broken.url, fresh_envelope([amazon_event("DEAD-1")])).status == 200

    (dead,) = wait_for(lambda: journal.events("dead"), "the event to go dead")
    assert (dead.event.assignment_id, dead.attempts) == ("DEAD-1", 3)
    assert dead.last_error is not None
    assert "DownstreamRefused: downstream refused AssignmentSubmitted DEAD-1" in dead.last_error
    assert journal.counts()["pending"] == 0

    listed = cli(broken, "events", "--state", "dead")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.split()[:2] == [str(dead.id), "dead"]
    assert "assignment=DEAD-1" in line
    assert "DownstreamRefused" in line

    broken.stop()
    fixed = server_factory(env, name="fixed")
    assert post(fixed.url, fresh_envelope([amazon_event("ALIVE-1")])).status == 200
    fixed.wait_for_events(1)  # its dispatcher is at work...
    assert journal.events("dead") == [dead], "...and leaves the dead event alone until an operator acts"

    redelivered = cli(fixed, "redeliver", "--dead")
    assert redelivered.returncode == 0, redelivered.stderr
    assert "1 dead event(s) put back in line" in redelivered.stdout
    records = fixed.wait_for_events(2)
    assert [record["assignment_id"] for record in records] == ["ALIVE-1", "DEAD-1"]
    after = wait_for(lambda: (e := journal.get(dead.id)) is not None and e.state == "delivered" and e, "delivered")
    assert after.attempts == 1
    delivered = journal.events()
    assert [stored.state for stored in delivered] == ["delivered", "delivered"]

    unknown = cli(fixed, "redeliver", "999999")
    assert unknown.returncode == 2
    assert "no event to redeliver with id 999999" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bogus = cli(fixed, "purge", "--delivered", "--older-than", "bogus")
    assert bogus.returncode == 2
    assert "'bogus' is not a duration" in bogus.stderr
    assert journal.events() == delivered, "neither command may change the journal"

    purged = cli(fixed, "purge", "--delivered", "--older-than", "0s")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("2 delivered event(s)")
    assert journal.events() == []


# --- 3. a slow hook ---------------------------------------------------------------------------------


def test_a_blocked_hook_never_delays_the_answer(
    server_factory: ServerFactory, journal: Journal, tmp_path: Path
) -> None:
    """The answers come back 200 while the hook is provably blocked; the events reach it once it is released.

    No timing: the first answer arrives before the release file exists, and
    the second arrives while the hook is known (by its own marker) to be
    stuck inside the first event.
    """
    gate = Gate.make(tmp_path)
    server = server_factory(receptor_env(journal, **gate.settings()))
    try:
        first = post(server.url, fresh_envelope([amazon_event("SLOW-1")]))
        assert (first.status, first.faultcode) == (200, None)
        assert not gate.release.exists()
        wait_for(lambda: gate.held() == 1, "the hook to start on the first event")
        second = post(server.url, fresh_envelope([amazon_event("SLOW-2")]))
        assert (second.status, second.faultcode) == (200, None)
        assert server.events() == [], "the hook was still blocked: nothing can have been recorded"
        assert journal.counts()["pending"] == 2
    finally:
        gate.open()
    records = server.wait_for_events(2)
    assert [record["assignment_id"] for record in records] == ["SLOW-1", "SLOW-2"]


# --- 4. duplicates over HTTP ------------------------------------------------------------------------


def test_duplicates_are_answered_200_journaled_and_never_delivered_twice(
    server_factory: ServerFactory, journal: Journal
) -> None:
    """A replayed message and a replayed event are kept as duplicates; same Timestamp+Signature is no duplicate.

    Every message below carries the same Timestamp and the same Signature
    (protocol.md section 4's test vector, KEY_2): only the replay of the very
    same message, and the same event inside another message, are duplicates.
    The replayed message holds a bare Ping (no EventTime, so nothing but the
    message itself can tell that it was seen before).
    """
    server = server_factory(receptor_env(journal, SOAPRECEPTOR_TIMESTAMP_TOLERANCE="0"))
    original = amazon_envelope(events=[amazon_event("DUP-1"), {"EventType": "Ping"}])
    messages = [
        original,
        original,  # replayed byte for byte
        amazon_envelope(events=[amazon_event("DUP-1"), amazon_event("DUP-2")]),  # DUP-1 again, in another message
        amazon_envelope(events=[amazon_event("SAME-SECOND-1")]),
        amazon_envelope(events=[amazon_event("SAME-SECOND-2"), amazon_event("SAME-SECOND-3")]),
    ]
    for body in messages:
        answer = post(server.url, body)
        assert (answer.status, answer.faultcode) == (200, None), answer.body

    counts = wait_settled(journal, "every original event to be delivered")

    assert counts == {"pending": 0, "delivered": 6, "dead": 0, "duplicate": 3}
    labels = Counter(str(record["assignment_id"] or record["event_type"]) for record in server.events())
    assert labels == dict.fromkeys(["DUP-1", "Ping", "DUP-2", "SAME-SECOND-1", "SAME-SECOND-2", "SAME-SECOND-3"], 1)
    rows: dict[int, list[StoredEvent]] = {}
    for stored in journal.events():
        rows.setdefault(stored.message_id, []).append(stored)
    shapes = [
        [(s.event.assignment_id or s.event.event_type, s.state, s.duplicate_of) for s in row] for row in rows.values()
    ]
    dup_1, ping = (stored.id for stored in rows[min(rows)])
    assert shapes == [
        [("DUP-1", "delivered", None), ("Ping", "delivered", None)],
        [("DUP-1", "duplicate", dup_1), ("Ping", "duplicate", ping)],
        [("DUP-1", "duplicate", dup_1), ("DUP-2", "delivered", None)],
        [("SAME-SECOND-1", "delivered", None)],
        [("SAME-SECOND-2", "delivered", None), ("SAME-SECOND-3", "delivered", None)],
    ]


# --- 5. crash safety --------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Threads that keep sending signed messages of new events and remember which ones were answered 200.

    Several senders keep both workers busy, so that a kill finds requests in
    flight. Each is bounded by ``max_messages`` and ``max_seconds``; a refused
    connection or a fault is remembered too, and that sender's next message
    waits a moment so that a server down between two rounds does not burn its
    whole budget.
    """

    url: str
    senders: int = 2
    events_per_message: int = 5
    max_messages: int = 1500
    max_seconds: float = 120.0
    acknowledged: list[list[str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sent: Counter[int] = field(default_factory=Counter)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for number in range(self.senders):
            thread = threading.Thread(target=self._run, args=(number,), name=f"traffic-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self, number: int) -> None:
        sender = Sender(self.url, KEY_2, timeout=DEADLINE / 2)
        end = time.monotonic() + self.max_seconds
        while not self._stopping.is_set() and self.sent[number] < self.max_messages and time.monotonic() < end:
            assignments = [f"CRASH-{number}-{self.sent[number]:05d}-{i}" for i in range(self.events_per_message)]
            self.sent[number] += 1
            try:
                result = sender.send([spec(assignment) for assignment in assignments])
            except Exception as exc:  # anything but an answer: the message is simply not acknowledged
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                if result.status == 200 and result.accepted:
                    self.acknowledged.append(assignments)
                    continue
                self.failures.append(str(result))
            self._stopping.wait(0.05)  # pacing while the server is down, not synchronisation

    def acknowledged_count(self) -> int:
        """How many messages were answered 200 so far; fails if a sender has stopped on its own."""
        if not self._threads or not all(thread.is_alive() for thread in self._threads):
            raise AssertionError(f"a sender stopped ({dict(self.sent)} sent); last failures: {self.failures[-3:]}")
        return len(self.acknowledged)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE)
            assert not thread.is_alive(), "a sender thread did not stop"


# How each round kills the server, all with SIGKILL. Round 1 kills the whole tree while the
# dispatcher is inside the hook (held at a gate), so that event must come back when its lease
# runs out; the other rounds leave (part of) the dispatcher to notice on its own that its
# parent is gone, and exit.
KILL_WHOLE_TREE = "the whole tree, the dispatcher inside the hook"
KILL_MASTER_AND_CHILDREN = "the master and its children (the dispatcher's own child must exit by itself)"
KILL_MASTER_AND_WORKERS = "the master and its workers (the dispatcher must exit by itself)"
KILL_ROUNDS = (KILL_WHOLE_TREE, KILL_MASTER_AND_CHILDREN, KILL_MASTER_AND_WORKERS)


def victims(tree: list[Proc], how: str) -> list[Proc]:
    """The processes of ``tree`` (master first) that a round of kind ``how`` kills."""
    master = tree[0]
    if how == KILL_WHOLE_TREE:
        return tree
    children = [proc for proc in tree if proc.parent == master.pid]
    if how == KILL_MASTER_AND_CHILDREN:
        return [master, *children]
    return [master, *(proc for proc in children if not proc.is_dispatcher)]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_embedded_dispatcher_runs_only_on_cpu_time_the_workers_leave(server_factory: ServerFactory) -> None:
    server = server_factory({})
    assert server.process is not None
    master = server.process.pid

    def dispatchers() -> list[Proc] | None:
        found = [proc for proc in process_tree(master) if proc.is_dispatcher]
        return found if len(found) == 2 else None  # the supervisor and the dispatcher it forked

    found = wait_for(dispatchers, "the embedded dispatcher's supervisor and the dispatcher it forks")
    assert {os.sched_getscheduler(proc.pid) for proc in found} == {os.SCHED_IDLE}
    others = [proc for proc in process_tree(master) if not proc.is_dispatcher]
    assert len(others) == 3, others  # the master and its 2 workers answer at the usual priority
    assert os.sched_getscheduler(master) == os.SCHED_OTHER
    # The workers too, SCHED_BATCH being the usual priority without preemption on wake-up: all their
    # threads, once each has set it (just after its fork).
    _wait_for_worker_policies(master, os.SCHED_BATCH)


def _workers(master: int) -> list[Proc]:
    """gunicorn's workers: the master's children but the embedded dispatcher."""
    return [proc for proc in process_tree(master) if proc.parent == master and not proc.is_dispatcher]


def _wait_for_worker_policies(master: int, policy: int) -> None:
    def policies() -> set[frozenset[int]]:
        workers = _workers(master)
        return {_thread_policies(proc.pid) for proc in workers} if len(workers) == 2 else set()

    wait_for(lambda: policies() == {frozenset({policy})} or None, f"both workers' threads under policy {policy}")


def _thread_policies(pid: int) -> frozenset[int]:
    """The scheduling policies of the threads of process ``pid``."""
    found = set()
    with contextlib.suppress(FileNotFoundError):  # the process is gone: no threads
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):  # the thread is gone
                found.add(os.sched_getscheduler(int(tid)))
    return frozenset(found)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
def test_workers_keep_the_default_policy_with_sched_policy_normal(server_factory: ServerFactory) -> None:
    server = server_factory({"SOAPRECEPTOR_SCHED_POLICY": "normal"})
    assert server.process is not None
    _wait_for_worker_policies(server.process.pid, os.SCHED_OTHER)


def _usable_cpus() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


@pytest.mark.skipif(len(_usable_cpus()) < 2, reason="pinning needs sched_setaffinity and 2 CPUs or more")
def test_each_worker_runs_on_a_cpu_of_its_own_and_a_replacement_takes_the_one_left_free(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({})  # 2 workers
    assert server.process is not None
    master = server.process.pid
    allowed = _usable_cpus()

    def pinned() -> dict[int, set[int]] | None:
        # A worker pins itself just after the fork: wait until both have.
        cpus = {}
        for proc in _workers(master):
            try:
                cpus[proc.pid] = os.sched_getaffinity(proc.pid)
            except ProcessLookupError:
                return None  # gone between the listing and the look (the killed one): look again
        return cpus if len(cpus) == 2 and all(len(cpu) == 1 for cpu in cpus.values()) else None

    cpus = wait_for(pinned, "both workers to be pinned")
    assert len(set.union(*cpus.values())) == 2, f"both workers on one CPU: {cpus}"
    assert set.union(*cpus.values()) <= allowed
    # The master and the dispatcher go where the scheduler puts them.
    assert os.sched_getaffinity(master) == allowed
    dispatchers = wait_for(lambda: [proc for proc in process_tree(master) if proc.is_dispatcher], "the dispatcher")
    assert all(os.sched_getaffinity(proc.pid) == allowed for proc in dispatchers)

    victim, survivor = cpus
    os.kill(victim, signal.SIGKILL)

    def replaced() -> dict[int, set[int]] | None:
        found = pinned()
        return found if found and victim not in found else None

    after = wait_for(replaced, "a pinned worker in place of the killed one")
    assert after[survivor] == cpus[survivor]
    (replacement,) = set(after) - {survivor}
    assert after[replacement] == cpus[victim], "the replacement takes the CPU the killed worker left free"


@pytest.mark.skipif(len(_usable_cpus()) < 2, reason="pinning needs sched_setaffinity and 2 CPUs or more")
def test_workers_float_with_cpu_affinity_off(server_factory: ServerFactory) -> None:
    server = server_factory({"SOAPRECEPTOR_CPU_AFFINITY": "off"})
    assert server.process is not None
    master = server.process.pid

    def workers() -> list[Proc] | None:
        found = _workers(master)
        return found if len(found) == 2 else None

    assert all(os.sched_getaffinity(proc.pid) == _usable_cpus() for proc in wait_for(workers, "the two workers"))


def test_answered_events_survive_sigkill_of_the_whole_server_and_reach_the_hook(
    server_factory: ServerFactory, journal: Journal, tmp_path: Path
) -> None:
    """SIGKILL gunicorn's master, workers and dispatcher mid-traffic, 3 times: no answered event is lost.

    Every event of every message answered 200 is in the journal and reached
    the hook after the restarts, including the one the dispatcher was holding
    in the hook when it was killed (taken again once its lease ran out);
    events delivered twice are at most one per round (only a kill between the
    hook's success and the journal's update can cause one); and no process of
    any killed or stopped server survives it.
    """
    hook_records = tmp_path / "hook.jsonl"
    gate = Gate.make(tmp_path)
    env = receptor_env(
        journal,
        **{
            **gate.settings(),
            "SOAPRECEPTOR_BIND": f"127.0.0.1:{free_port()}",  # every round's server takes the same port in turn
            "SOAPRECEPTOR_TEST_EVENTS": str(hook_records),
            # The lease is 2 x this + 30 s: the event held by the SIGKILLed dispatcher waits that
            # long before another takes it, which must fit in the deadline of the final wait.
            "SOAPRECEPTOR_HOOK_TIMEOUT": "5",
        },
    )
    seen: list[Proc] = []
    held_when_killed: set[str] = set()

    def running(server: Server, ready: Callable[[set[int]], bool]) -> list[Proc]:
        """Wait for 20 more answers and for ``ready(pids of the server)``; return the server's processes."""
        assert server.process is not None
        master, since = server.process.pid, len(traffic.acknowledged)

        def busy() -> list[Proc] | None:
            if traffic.acknowledged_count() < since + 20 or not ready({p.pid for p in process_tree(master)}):
                return None
            # Seen again now, so that it has every process that made ``ready`` true (one may
            # have been forked between the scan above and the check).
            return process_tree(master)

        tree: list[Proc] = wait_for(busy, f"20 more answers and the dispatcher of {server.workdir.name} at work")
        seen.extend(tree)
        return tree

    def in_the_hook(pids: set[int]) -> bool:
        return gate.held() > 0  # the dispatcher is blocked at the gate, holding its first event

    def delivered_by(pids: set[int]) -> bool:
        return any(record["pid"] in pids for record in read_records(hook_records))

    server = server_factory(env, name="round-0")
    traffic = Traffic(server.url).start()
    try:
        for number, how in enumerate(KILL_ROUNDS):
            tree = running(server, in_the_hook if how == KILL_WHOLE_TREE else delivered_by)
            assert any(proc.is_dispatcher for proc in tree), f"no embedded dispatcher among {tree}"
            held = set(os.listdir(gate.entered))
            kill_all(victims(tree, how))
            assert server.process is not None
            server.process.wait(timeout=DEADLINE)
            wait_gone(tree, f"every process of the server killed in round {number} ({how}) to exit")
            gate.open()
            server = server_factory(env, name=f"round-{number + 1}")
            if how == KILL_WHOLE_TREE:
                held_when_killed = held
        final_tree = running(server, delivered_by)
        traffic.stop()

        counts = wait_settled(journal, "the journal to have no pending event after the restarts")
        server.stop()
        wait_gone(final_tree, "every process of the final server to exit after SIGTERM")
    finally:
        gate.open()
        traffic.stop()
        server.stop()
        kill_all(seen)

    stored = by_assignment(journal.events())
    acknowledged = {assignment for message in traffic.acknowledged for assignment in message}
    recorded = times_recorded(read_records(hook_records))
    twice = {assignment: n for assignment, n in recorded.items() if n > 1}
    print(
        f"\ncrash test: {sum(traffic.sent.values())} messages sent, {len(traffic.acknowledged)} answered 200, "
        f"{len(traffic.failures)} not; {len(stored)} events journaled ({len(stored) - len(acknowledged)} of them "
        f"never acknowledged); {counts}; events delivered more than once: {len(twice)} {twice}"
    )
    assert counts["dead"] == 0
    assert counts["duplicate"] == 0
    assert not acknowledged - stored.keys(), "events answered 200 but missing from the journal"
    assert {s.state for s in stored.values()} == {"delivered"}
    assert not stored.keys() - recorded.keys(), "journaled events that never reached the hook"
    assert not recorded.keys() - stored.keys(), "the hook got events that were never journaled"
    assert len(twice) <= len(KILL_ROUNDS), twice
    killed_in_hook = [s for s in stored.values() if event_key(s.event) in held_when_killed]
    assert len(killed_in_hook) == 1, "the gate held exactly one event when the whole tree was killed"
    assert killed_in_hook[0].attempts >= 2, "the attempt that was killed counts, and another one delivered it"
    assert recorded[str(killed_in_hook[0].event.assignment_id)] == 1


# --- 6. a full journal ------------------------------------------------------------------------------


@contextmanager
def tiny_tmpfs(mountpoint: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``mountpoint`` (skip the test if this host does not let us mount)."""
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.strip()
        if os.geteuid() != 0 or any(w in reason.lower() for w in ("permission", "not permitted", "superuser")):
            pytest.skip(f"cannot mount a tmpfs here: {reason}")
        raise AssertionError(f"mount failed: {reason}")
    try:
        yield mountpoint
    finally:

        def unmounted() -> bool:
            umount = ["umount", str(mountpoint)]
            return subprocess.run(umount, capture_output=True, check=False, timeout=DEADLINE).returncode == 0

        wait_for(unmounted, f"{mountpoint} to be unmounted")


def test_a_full_journal_gets_a_server_fault_and_never_a_200_for_what_was_not_stored(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """With the journal on a 256 KiB tmpfs, large messages fill it: each answer is 200 or Server.JournalUnavailable.

    Both kinds occur, and every message answered 200 has all its events in
    the journal (read, after the server has stopped, from a copy of its files).
    """
    # Less than the 1 MiB the spool sets aside at a time: the messages that fit must still be taken.
    with tiny_tmpfs(tmp_path / "tiny") as disk:
        journal = Journal(disk / "journal.db")
        server = server_factory(receptor_env(journal))
        answers: list[tuple[list[str], support.Answer]] = []
        try:
            for number in range(200):
                assignments = [f"FULL-{number:03d}-{i:02d}-{'X' * 200}" for i in range(20)]
                answer = post(server.url, fresh_envelope(amazon_event(a) for a in assignments))
                answers.append((assignments, answer))
                if sum(refused.status != 200 for _, refused in answers) >= 3:
                    break
        finally:
            server.stop()
        copy = tmp_path / "copy"
        copy.mkdir()
        for name in ("journal.db", "journal.db-wal"):
            if (disk / name).exists():
                shutil.copy2(disk / name, copy / name)
        if (disk / "journal.db-spool").exists():
            # Accepted messages the dispatcher had not moved into the journal yet (no room for them there).
            shutil.copytree(disk / "journal.db-spool", copy / "journal.db-spool")

    outcomes = Counter((answer.status, answer.faultcode) for _, answer in answers)
    print(f"\nfull journal: answers {dict(outcomes)}")
    assert set(outcomes) <= {(200, None), (500, "Server.JournalUnavailable")}, outcomes
    assert outcomes[(200, None)] >= 1, outcomes
    assert outcomes[(500, "Server.JournalUnavailable")] >= 1, outcomes
    stored_journal = Journal(copy / "journal.db")
    try:
        stored = {str(stored.event.assignment_id) for stored in stored_journal.events()}
    finally:
        stored_journal.close()
    for assignments, answer in answers:
        if answer.status == 200:
            assert not set(assignments) - stored, "a message answered 200 is not (all) in the journal"


# --- 7. several dispatchers -------------------------------------------------------------------------


def test_two_dispatchers_on_one_journal_deliver_each_event_exactly_once(
    server_factory: ServerFactory, journal: Journal, tmp_path: Path
) -> None:
    """100 journaled events, two ``soapreceptor dispatch`` processes racing for them: each event is recorded once.

    The receptor runs with SOAPRECEPTOR_DISPATCHER=off, so the events wait in
    the journal until the two dispatchers start. The gated hook holds each
    dispatcher on its first event until both are inside the hook at once (two
    different events claimed by two processes at the same moment), then
    lets them race through the rest. Both stop cleanly on SIGTERM.
    """
    gate = Gate.make(tmp_path)
    server = server_factory(receptor_env(journal, SOAPRECEPTOR_DISPATCHER="off", **gate.settings()))
    sender = Sender(server.url, KEY_2)
    everyone = []
    for message in range(10):
        assignments = [f"PAIR-{message:02d}-{i}" for i in range(10)]
        result = sender.send([spec(assignment) for assignment in assignments])
        assert result.accepted, result
        everyone += assignments
    assert journal.counts()["pending"] == 100, "no dispatcher is running: every event must still be pending"

    dispatchers: list[subprocess.Popen[bytes]] = []
    try:
        for number in range(2):
            with (server.workdir / f"dispatcher-{number}.log").open("wb") as log:
                command = [*CLI, "dispatch"]
                dispatchers.append(
                    subprocess.Popen(command, env=server.full_env(), cwd=server.workdir, stdout=log, stderr=log)
                )
        wait_for(lambda: gate.held() == 2, "both dispatchers to be inside the hook, each with its own event")
        gate.open()
        counts = wait_settled(journal, "the two dispatchers to deliver every event")
        codes = stop_all(dispatchers)
    finally:
        gate.open()
        stop_all(dispatchers)

    records = server.events()
    per_process = Counter(record["pid"] for record in records)
    print(f"\ntwo dispatchers: deliveries per process {dict(per_process)}")
    assert counts == {"pending": 0, "delivered": 100, "dead": 0, "duplicate": 0}
    assert times_recorded(records) == dict.fromkeys(everyone, 1)
    assert all(stored.attempts == 1 for stored in journal.events())
    assert len(per_process) == 2, "each dispatcher delivered at least the event it held at the gate"
    assert codes == [0, 0]
