"""How the kernel schedules each gunicorn worker (``SOAPRECEPTOR_SCHED_POLICY``).

A worker's threads wake one another all the time: the GIL handed on, the
waiters of a group commit released, a connection handed back to the
poller. Under Linux's default policy a thread that is woken may preempt
the one that woke it, and in a Python process that is nearly always a
loss: the woken thread needs the GIL, which its waker still holds, so it
sleeps again and the CPU has switched twice for nothing. ``SCHED_BATCH`` is
the same fair scheduler without that preemption on wake-up: the waker runs
on until it blocks or its time slice ends. Measured side by side on 2
CPUs (10-event messages, full speed, alternating rounds), it cut the
workers' involuntary context switches by more than half and raised
soapreceptor's rate by 7 to 11 % (the bare limit's by 3 to 4 %); p99
latency at half of peak was no worse in those runs (6.8-10.8 against
7.8-10.0 ms), and the full-speed tails seen in some runs (20-95 ms) came
under either policy.

The price is on a host shared with busy programs of the default policy: a
woken worker waits for the running one to block or use up its slice (a few
milliseconds at most) instead of taking the CPU at once. ``normal`` keeps
the default policy. gunicorn's master keeps it either way (it only
supervises), and the embedded dispatcher runs ``SCHED_IDLE``
(``soapreceptor dispatch --idle``).

A worker sets its policy at once after the fork (``post_fork``), before
it starts any thread: Linux keeps a policy per thread, and a thread
starts with the policy of the one that started it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from . import settings

POLICIES: Final[Mapping[str, str]] = {
    "batch": "workers do not preempt one another on wake-up",
    "normal": "the kernel's default policy",
}


def policy(environ: Mapping[str, str]) -> str:
    """``SOAPRECEPTOR_SCHED_POLICY`` from ``environ``: ``batch`` (the default) or ``normal``."""
    return settings.one_of(environ, "SOAPRECEPTOR_SCHED_POLICY", POLICIES)


def apply(name: str) -> bool:
    """Schedule the calling thread (and the threads it starts from now on) under policy ``name``.

    True if the policy was set; False where the platform has no
    ``SCHED_BATCH`` (macOS), or for ``normal``, which leaves the policy as
    it is.
    """
    if name == "normal" or not hasattr(os, "SCHED_BATCH"):
        return False
    # Needs no privilege: SCHED_BATCH is a non-real-time policy, at priority 0 like the default.
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    return True
