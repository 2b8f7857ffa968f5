"""The simulator: a deterministic, plausible traffic model, sent to a real receptor, checked against its journal."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import re
import socket
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from soapreceptor import simulate
from soapreceptor.sender import EventSpec
from soapreceptor.simulate import PlannedMessage, check_journal, percentile, plan, run
from tests import support
from tests.support import Server

START = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
ASSIGNMENT_ENDS = {"AssignmentSubmitted", "AssignmentReturned", "AssignmentAbandoned"}
HIT_ENDS = {"HITReviewable", "HITExpired"}
MTURK_ID = re.compile(r"[A-Z0-9]{30}")


def flat(planned: list[PlannedMessage]) -> list[EventSpec]:
    return [event for message in planned for event in message.events]


def when(event: EventSpec) -> dt.datetime:
    assert event.event_time is not None, f"{event} has no EventTime"
    return event.event_time


@pytest.fixture(scope="module")
def big_plan() -> list[PlannedMessage]:
    return plan(300, 3, seed=7, start=START, rate=20.0, duration=None)


def test_the_plan_is_deterministic_for_a_seed() -> None:
    first = plan(20, 3, 1, START, 20.0, None)
    assert first == plan(20, 3, 1, START, 20.0, None)
    assert first != plan(20, 3, 2, START, 20.0, None)
    assert flat(first) != flat(plan(20, 3, 2, START, 20.0, None))


def test_life_cycles_are_plausible(big_plan: list[PlannedMessage]) -> None:
    accepted: dict[str, tuple[int, EventSpec]] = {}
    ended: dict[str, str] = {}
    hit_type_of: dict[str, str] = {}
    assignments_of: defaultdict[str, list[str]] = defaultdict(list)
    last_assignment_event: dict[str, tuple[int, dt.datetime]] = {}
    hit_end: dict[str, tuple[int, str]] = {}
    submitted: Counter[str] = Counter()
    for position, event in enumerate(flat(big_plan)):
        moment = when(event)
        assert moment.microsecond == 0
        if event.event_type == "Ping":
            assert (event.hit_type_id, event.hit_id, event.assignment_id) == (None, None, None)
            continue
        assert event.hit_type_id is not None
        assert event.hit_id is not None
        assert MTURK_ID.fullmatch(event.hit_type_id)
        assert MTURK_ID.fullmatch(event.hit_id)
        assert hit_type_of.setdefault(event.hit_id, event.hit_type_id) == event.hit_type_id
        assert event.hit_id not in hit_end, f"{event} after the HIT ended"
        if event.event_type in HIT_ENDS:
            assert event.assignment_id is None
            hit_end[event.hit_id] = (position, event.event_type)
            if event.hit_id in last_assignment_event:
                assert moment >= last_assignment_event[event.hit_id][1]
            continue
        assignment = event.assignment_id
        assert assignment is not None
        assert MTURK_ID.fullmatch(assignment)
        last_assignment_event[event.hit_id] = (position, moment)
        if event.event_type == "AssignmentAccepted":
            assert assignment not in accepted, "an assignment ID is accepted once"
            accepted[assignment] = (position, event)
            assignments_of[event.hit_id].append(assignment)
        else:
            assert event.event_type in ASSIGNMENT_ENDS
            assert assignment in accepted, f"{event.event_type} {assignment} before it was accepted"
            assert accepted[assignment][1].hit_id == event.hit_id
            assert when(accepted[assignment][1]) <= moment
            assert assignment not in ended, f"{assignment} both {ended[assignment]} and {event.event_type}"
            ended[assignment] = event.event_type
            submitted[event.hit_id] += event.event_type == "AssignmentSubmitted"

    assert len(hit_end) == 300, "every HIT ends"
    assert set(ended) == set(accepted), "every accepted assignment is submitted, returned or abandoned"
    for hit, (_position, outcome) in hit_end.items():
        assert submitted[hit] <= 3
        assert outcome == ("HITReviewable" if submitted[hit] == 3 else "HITExpired")
        assert len(assignments_of[hit]) >= 3
    # HIT types are shared by groups of HITs; IDs never collide across kinds.
    assert 1 < len(set(hit_type_of.values())) < len(hit_type_of)
    assert not set(hit_type_of) & set(accepted)
    assert not set(hit_type_of) & set(hit_type_of.values())
    # The documented proportions, loosely.
    outcomes = Counter(ended.values())
    total = sum(outcomes.values())
    assert 0.65 < outcomes["AssignmentSubmitted"] / total < 0.85
    assert 0.08 < outcomes["AssignmentReturned"] / total < 0.22
    assert 0.04 < outcomes["AssignmentAbandoned"] / total < 0.16
    assert Counter(outcome for _, outcome in hit_end.values())["HITExpired"] > 0
    pings = sum(message.events[0].event_type == "Ping" for message in big_plan)
    assert 0 < pings < 0.03 * len(big_plan)


def test_messages_batch_close_events_and_keep_time_order(big_plan: list[PlannedMessage]) -> None:
    assert all(1 <= len(message.events) <= simulate.BATCH_CAP for message in big_plan)
    assert any(len(message.events) > 1 for message in big_plan), "close events are batched"
    previous_send, previous_time = 0.0, START.replace(microsecond=0)
    pings: list[dt.datetime] = []
    for message in big_plan:
        times = [when(event) for event in message.events]
        assert max(times) - min(times) <= dt.timedelta(seconds=1)
        assert times == sorted(times)
        assert times[0] >= previous_time
        previous_time = times[-1]
        assert message.send_at >= previous_send
        previous_send = message.send_at
        if any(event.event_type == "Ping" for event in message.events):
            assert len(message.events) == 1, "a Ping travels alone"
            pings.append(when(message.events[0]))
    assert len(pings) == len(set(pings)), "no two Pings in the same second (they would be duplicates)"
    # A message that is not full took every event within the window of its first one.
    for before, after in itertools.pairwise(big_plan):
        if len(before.events) < simulate.BATCH_CAP and "Ping" not in (
            before.events[0].event_type,
            after.events[0].event_type,
        ):
            assert when(after.events[0]) - when(before.events[0]) >= dt.timedelta(seconds=1)


def test_batches_are_capped() -> None:
    dense = [simulate._Timed(0.001 * n, n, EventSpec("Ping")) for n in range(25)]
    assert [len(batch) for batch in simulate._batches(dense)] == [10, 10, 5]
    spread = [simulate._Timed(0.6 * n, n, EventSpec("Ping")) for n in range(5)]
    assert [len(batch) for batch in simulate._batches(spread)] == [2, 2, 1]


def test_rate_and_duration() -> None:
    full = plan(100, 3, 5, START, 40.0, None)
    assert len(full) / full[-1].send_at == pytest.approx(40.0)
    slow = plan(100, 3, 5, START, 4.0, None)
    assert [m.events for m in slow] == [m.events for m in full]
    assert slow[-1].send_at == pytest.approx(full[-1].send_at * 10)
    cut = plan(100, 3, 5, START, 40.0, 2.5)
    assert cut == full[: len(cut)]
    assert 0 < len(cut) < len(full)
    assert all(m.send_at <= 2.5 for m in cut)
    assert full[len(cut)].send_at > 2.5
    assert plan(0, 3, 5, START, 40.0, None) == []
    with pytest.raises(ValueError, match="aware"):
        plan(1, 1, 0, dt.datetime(2024, 1, 1), 1.0, None)
    with pytest.raises(ValueError, match="rate"):
        plan(1, 1, 0, START, 0.0, None)


def test_nearest_rank_percentiles() -> None:
    values = [float(n) for n in range(100, 0, -1)]
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0


def test_a_real_receptor_journals_exactly_what_it_accepted(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    server = server_factory({"SOAPRECEPTOR_JOURNAL": str(journal)})
    planned = plan(5, 3, 11, dt.datetime.now(dt.UTC), 50.0, None)
    report = run(server.url, support.KEY_2, planned, realtime=False)

    events = sum(len(message.events) for message in planned)
    assert report.all_accepted, report.format()
    assert (report.messages_sent, report.messages_accepted) == (len(planned), len(planned))
    assert (report.events_sent, report.events_accepted) == (events, events)
    assert report.messages_refused == report.messages_failed == 0
    assert report.accepted_events == flat(planned)
    assert len(report.latencies_ms) == len(planned)
    latency = report.latency_ms
    assert latency is not None
    assert 0 < latency.p50 <= latency.p95 <= latency.p99 <= latency.max
    assert check_journal(journal, report) == []

    # A fabricated extra event is missing from the journal; a stored event not reported is unexpected.
    fabricated = EventSpec("AssignmentAccepted", "NOTYPE", "NOHIT", "NOASSIGNMENT", START.replace(microsecond=0))
    extra = dataclasses.replace(report, accepted_events=[*report.accepted_events, fabricated])
    assert check_journal(journal, extra) == [
        "missing from the journal: AssignmentAccepted at 2024-05-06T07:08:09Z HIT NOHIT assignment NOASSIGNMENT"
    ]
    fewer = dataclasses.replace(report, accepted_events=report.accepted_events[1:])
    (problem,) = check_journal(journal, fewer)
    assert problem.startswith("in the journal but never sent: ")
    assert str(report.accepted_events[0].hit_id) in problem
    # Events of a message that got no answer may be stored.
    unanswered = dataclasses.replace(fewer, unconfirmed_events=report.accepted_events[:1])
    assert check_journal(journal, unanswered) == []
    assert check_journal(tmp_path / "absent.db", report) == [f"no journal at {tmp_path / 'absent.db'}"]


def _arguments(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_command_reports_and_checks_the_journal(
    server_factory: Callable[..., Server], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "j.db"
    server = server_factory({"SOAPRECEPTOR_JOURNAL": str(journal)})
    args = _arguments(
        "--url", server.url, "--hits", "4", "--assignments", "2", "--rate", "100", "--seed", "3",
        "--secret", support.KEY_2, "--expect-journal", str(journal),
    )  # fmt: skip
    assert simulate.command(args) == 0
    out, err = capsys.readouterr()
    assert re.search(r"p50 [\d.]+, p95 [\d.]+, p99 [\d.]+", out), out
    assert "holds exactly the" in out
    assert "refused:  0 messages" in out
    assert "simulate:" in err

    # Signed with another key: every message is refused, by faultcode; exit 1.
    wrong = _arguments("--url", server.url, "--hits", "1", "--rate", "100", "--secret", "not-the-key")
    assert simulate.command(wrong) == 1
    out, _err = capsys.readouterr()
    assert "Client.SignatureMismatch" in out
    assert "accepted: 0 messages" in out


def test_the_command_needs_a_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SOAPRECEPTOR_SECRET", raising=False)
    monkeypatch.delenv("SOAPRECEPTOR_SECRET_FILE", raising=False)
    assert simulate.command(_arguments("--url", "http://127.0.0.1:9/")) == 2
    assert "soapreceptor: simulate needs a signing key: pass --secret" in capsys.readouterr().err
    args = _arguments("--url", "http://x/")
    assert (args.hits, args.assignments, args.rate, args.duration, args.seed) == (10, 3, 20.0, None, 0)
    assert (args.notification_version, args.expect_journal) == ("2006-05-05", None)


def test_no_answer_is_counted_as_failed() -> None:
    planned = plan(1, 1, 0, START, 1000.0, None)
    # A port bound but not listening: every connection is refused at once.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/"
        report = run(url, support.KEY_2, planned, realtime=False, timeout=5.0)
    assert report.messages_failed == report.messages_sent == len(planned)
    assert report.unconfirmed_events == flat(planned)
    assert report.failures
    assert not report.all_accepted
    assert report.latency_ms is None
    assert "no answer: " in report.format()
