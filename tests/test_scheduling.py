"""The workers' scheduling policy (soapreceptor.scheduling); what gunicorn's workers get is tested on gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from soapreceptor import scheduling


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "batch"), ("", "batch"), (" Batch ", "batch"), ("NORMAL", "normal")]
)
def test_the_setting(value: str | None, expected: str) -> None:
    environ = {} if value is None else {"SOAPRECEPTOR_SCHED_POLICY": value}
    assert scheduling.policy(environ) == expected


def test_an_unknown_setting_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"SOAPRECEPTOR_SCHED_POLICY is 'fifo'; use 'batch' .* or 'normal'"):
        scheduling.policy({"SOAPRECEPTOR_SCHED_POLICY": "fifo"})


# Run in a child: the policy of the test process itself must not change.
_REPORT = """
import os, sys, threading
from soapreceptor import scheduling
applied = scheduling.apply(sys.argv[1])
seen = []
thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(threading.get_native_id())))
thread.start()
thread.join()
print(applied, os.sched_getscheduler(0), seen[0])
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
@pytest.mark.parametrize(
    ("name", "applied", "expected"), [("batch", True, "SCHED_BATCH"), ("normal", False, "SCHED_OTHER")]
)
def test_the_policy_holds_for_the_caller_and_the_threads_it_starts(name: str, applied: bool, expected: str) -> None:
    done = subprocess.run([sys.executable, "-c", _REPORT, name], capture_output=True, text=True, check=True, timeout=60)
    policy = getattr(os, expected)
    assert done.stdout.split() == [str(applied), str(policy), str(policy)]


def test_nothing_is_set_where_the_platform_has_no_batch_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "SCHED_BATCH", raising=False)
    monkeypatch.setattr(os, "sched_setscheduler", lambda *args: pytest.fail("no policy may be set"), raising=False)
    assert scheduling.apply("batch") is False
