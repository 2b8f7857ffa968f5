"""The pytest plugin (``soapreceptor.testing``) as a user gets it: loaded by its entry point in a pytest of its own.

Each test writes a small user project with pytester (a hook module, a
conftest and a test file using the plugin's fixtures) and runs it in a
subprocess, with warnings as errors, so that the plugin is found through the
``pytest11`` entry point exactly as in a user's environment. The user's
conftest checks after every test that no thread of the receptor fixtures is
left running.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["pytester"]

USER_HOOKS = '''
"""A user's hooks: what the example suite tests."""

import json
import os

from soapreceptor import Event

SEEN: list[Event] = []


def remember(event: Event) -> None:
    SEEN.append(event)


def append_to_file(event: Event) -> None:
    line = {"type": event.event_type, "assignment": event.assignment_id, "pid": os.getpid()}
    with open(os.environ["USER_HOOK_LOG"], "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\\n")


def always_fail(event: Event) -> None:
    raise RuntimeError(f"cannot handle {event.event_type}")
'''

USER_CONFTEST = '''
import threading

import pytest


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    """Set up before the receptor fixtures, so this runs after they are torn down."""
    yield
    assert threading.enumerate() == [threading.main_thread()]
'''

IN_PROCESS = """
import pytest
import requests

import user_hooks
from soapreceptor.sender import EventSpec


@pytest.fixture
def soapreceptor_hook():
    user_hooks.SEEN.clear()
    return user_hooks.remember


def test_accepted_then_submitted_reach_the_hook(receptor):
    receptor.send(EventSpec("AssignmentAccepted", "HITTYPE1", "HIT1", "ASSIGNMENT1"))
    receptor.send("AssignmentSubmitted:HITTYPE1:HIT1:ASSIGNMENT1")
    delivered = receptor.wait_for_delivery(2)
    assert [event.event_type for event in user_hooks.SEEN] == ["AssignmentAccepted", "AssignmentSubmitted"]
    assert {(event.hit_id, event.assignment_id) for event in user_hooks.SEEN} == {("HIT1", "ASSIGNMENT1")}
    assert [stored.event for stored in delivered] == user_hooks.SEEN
    assert [stored.state for stored in receptor.events()] == ["delivered", "delivered"]
    assert receptor.url.startswith("http://127.0.0.1:")


def test_every_version_and_several_events_per_call(receptor):
    for version in ("2006-05-05", "2006-08-23", "2006-10-31"):
        receptor.send(
            EventSpec("AssignmentAccepted", "HITTYPE1", "HIT1", version),
            EventSpec("AssignmentSubmitted", "HITTYPE1", "HIT1", version),
            version=version,
        )
    assert len(receptor.wait_for_delivery()) == 6
    assert [event.version for event in user_hooks.SEEN] == [event.assignment_id for event in user_hooks.SEEN]


def test_a_replayed_call_reaches_the_hook_once(receptor):
    envelope = receptor.sender.envelope([EventSpec("AssignmentSubmitted", "HITTYPE1", "HIT1", "ASSIGNMENT1")])
    for _ in range(2):
        with requests.post(receptor.url, data=envelope, headers={"Content-Type": "text/xml"}, timeout=60) as answer:
            assert answer.status_code == 200
    receptor.wait_for_delivery()
    assert len(user_hooks.SEEN) == 1
    assert [stored.state for stored in receptor.events()] == ["delivered", "duplicate"]


def test_a_call_the_receptor_refuses_is_not_journaled(receptor):
    refused = receptor.sender.send([EventSpec("Ping")], signature="bm90IHRoZSBzaWduYXR1cmU=")
    assert refused.faultcode == "Client.SignatureMismatch"
    assert receptor.events() == []


@pytest.mark.parametrize("soapreceptor_hook", ["user_hooks:remember"])
def test_a_hook_given_by_name(receptor):
    user_hooks.SEEN.clear()
    receptor.send("HITReviewable:HITTYPE1:HIT1")
    receptor.wait_for_delivery(1)
    assert [(event.event_type, event.assignment_id) for event in user_hooks.SEEN] == [("HITReviewable", None)]
"""

DEFAULT_HOOK = """
def test_the_default_hook_records_what_it_is_handed(receptor, soapreceptor_recorder):
    receptor.send("AssignmentAccepted:HITTYPE1:HIT1:ASSIGNMENT1", "AssignmentSubmitted:HITTYPE1:HIT1:ASSIGNMENT1")
    receptor.wait_for_delivery()
    assert receptor.hook is soapreceptor_recorder
    assert [event.event_type for event in soapreceptor_recorder.events] == ["AssignmentAccepted", "AssignmentSubmitted"]
"""

FAILING_HOOK = """
import pytest

import user_hooks


@pytest.fixture
def soapreceptor_hook():
    return user_hooks.always_fail


@pytest.fixture
def soapreceptor_retry_schedule():
    return (0.01, 0.02)


def test_a_failing_event_is_retried_then_dead(receptor):
    receptor.send("AssignmentSubmitted:HITTYPE1:HIT1:ASSIGNMENT1")
    assert receptor.wait_for_delivery(allow_dead=True) == []
    [dead] = receptor.events("dead")
    assert dead.attempts == 3
    assert dead.last_error.startswith("RuntimeError: cannot handle AssignmentSubmitted")


@pytest.mark.parametrize("n", [None, 1])
def test_waiting_for_a_delivery_the_hook_fails_says_why(receptor, n):
    receptor.send("AssignmentAccepted:HITTYPE1:HIT1:ASSIGNMENT1")
    with pytest.raises(AssertionError, match=r"(?s)the hook failed.* dead=1,.*cannot handle AssignmentAccepted"):
        receptor.wait_for_delivery(n)


@pytest.mark.parametrize("soapreceptor_retry_schedule", [(3600,)])
def test_waiting_too_long_says_what_is_pending(receptor):
    receptor.send("AssignmentAccepted:HITTYPE1:HIT1:ASSIGNMENT1")
    with pytest.raises(AssertionError, match=r"timed out after 0.5 s waiting for every event.*pending=1"):
        receptor.wait_for_delivery(timeout=0.5)


@pytest.mark.parametrize("soapreceptor_retry_schedule", [()])
def test_with_no_retries_the_first_failure_is_final(receptor):
    receptor.send("AssignmentAccepted:HITTYPE1:HIT1:ASSIGNMENT1")
    receptor.wait_for_delivery(allow_dead=True)
    assert [(stored.state, stored.attempts) for stored in receptor.events()] == [("dead", 1)]
"""

GUNICORN = """
import json
import os
from pathlib import Path

import pytest

import user_hooks


@pytest.fixture
def hook_log(tmp_path):
    return tmp_path / "hook.jsonl"


@pytest.fixture
def soapreceptor_gunicorn_env(hook_log):
    return {{"USER_HOOK_LOG": str(hook_log)}}


@pytest.mark.parametrize("soapreceptor_hook", ["user_hooks:append_to_file", user_hooks.append_to_file])
def test_events_reach_the_hook_under_gunicorn(gunicorn_receptor, hook_log):
    gunicorn_receptor.send("AssignmentAccepted:HITTYPE1:HIT1:ASSIGNMENT1")
    gunicorn_receptor.send("AssignmentSubmitted:HITTYPE1:HIT1:ASSIGNMENT1")
    assert len(gunicorn_receptor.wait_for_delivery(2)) == 2
    seen = [json.loads(line) for line in hook_log.read_text().splitlines()]
    assert [(line["type"], line["assignment"]) for line in seen] == [
        ("AssignmentAccepted", "ASSIGNMENT1"),
        ("AssignmentSubmitted", "ASSIGNMENT1"),
    ]
    assert {{line["pid"] for line in seen}} != {{os.getpid()}}  # the dispatcher process, not this one
    assert gunicorn_receptor.hook == "user_hooks:append_to_file"
    assert "Listening at: http://127.0.0.1:" in gunicorn_receptor.log()
    with open({pids!r}, "a", encoding="utf-8") as pids:
        pids.write(f"{{gunicorn_receptor.process.pid}}\\n")


@pytest.mark.parametrize("soapreceptor_hook", [lambda event: None])
def test_a_hook_without_an_importable_name_is_refused(gunicorn_receptor):
    pass
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's project: their hooks, a conftest, warnings as errors; the plugin comes from the entry point."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(user_hooks=USER_HOOKS)
    pytester.makeconftest(USER_CONFTEST)
    return pytester


def test_the_fixtures_come_from_the_entry_point(user_project: pytest.Pytester) -> None:
    result = user_project.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(
        [
            "*fixtures defined from soapreceptor.testing*",
            "soapreceptor_secret -- *",
            "soapreceptor_hook -- *",
            "    The hook the receptor fixtures hand events to; override it to return yours.",
            "receptor -- *",
            "gunicorn_receptor -- *",
        ]
    )
    assert result.ret == 0


def test_the_in_process_receptor_hands_events_to_the_users_hook(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(test_in_process=IN_PROCESS, test_default_hook=DEFAULT_HOOK)
    result = user_project.runpytest_subprocess("-v")
    result.assert_outcomes(passed=6)


def test_a_failing_hook_is_retried_then_dead_as_configured(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(test_failing_hook=FAILING_HOOK)
    result = user_project.runpytest_subprocess("-v")
    result.assert_outcomes(passed=5)


def test_the_gunicorn_receptor_runs_the_deployment_and_stops_it(user_project: pytest.Pytester) -> None:
    pids = user_project.path / "gunicorn.pids"
    user_project.makepyfile(test_gunicorn=GUNICORN.format(pids=str(pids)))
    result = user_project.runpytest_subprocess("-v")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*gunicorn_receptor runs the hook in another process*has no name*"])
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 2
    for pid in started:  # each master was stopped and reaped by the fixture
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
