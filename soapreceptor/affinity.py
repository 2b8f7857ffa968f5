"""Which CPU each gunicorn worker runs on (``SOAPRECEPTOR_CPU_AFFINITY``).

A worker wakes up several times per request (the connection becomes
readable, a thread takes it, the journal's sync returns, the answer goes
out). A worker that stays on one CPU finds its caches warm at each of those
wake-ups; one the scheduler moves between CPUs does not, and on a virtual
machine each move is also an interrupt sent to another virtual CPU. Where
there is a CPU for every worker (the default is one worker per CPU), each is
pinned to one of its own, as nginx's ``worker_cpu_affinity auto`` does; where
there are more workers than CPUs they are left to the scheduler, which can
balance them. The embedded dispatcher is never pinned: it runs on whatever
CPU time the workers leave.

:func:`choose_cpu` is pure. gunicorn's master chooses each worker's CPU
before it forks it (``pre_fork``: the choice cannot race another worker's
start), and the worker pins itself at once (``post_fork``), before it
starts any thread.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from typing import Final

from . import settings

MODES: Final[Mapping[str, str]] = {
    "auto": "each worker on a CPU of its own where there is one for each",
    "off": "workers go where the scheduler puts them",
}


def mode(environ: Mapping[str, str]) -> str:
    """``SOAPRECEPTOR_CPU_AFFINITY`` from ``environ``: ``auto`` (the default) or ``off``."""
    return settings.one_of(environ, "SOAPRECEPTOR_CPU_AFFINITY", MODES)


def choose_cpu(allowed: Collection[int], taken: Iterable[int | None]) -> int:
    """The CPU of ``allowed`` for a new worker: the one fewest others are on (``taken``), the lowest on a tie.

    ``taken`` holds the CPU of each other worker, None for one not pinned.
    """
    if not allowed:
        raise ValueError("no CPU to choose from")
    load = dict.fromkeys(sorted(allowed), 0)
    for cpu in taken:
        if cpu in load:
            load[cpu] += 1
    return min(load, key=lambda cpu: load[cpu])


def cpu_for_new_worker(workers: int, taken: Iterable[int | None]) -> int | None:
    """The CPU a worker about to be forked is to run on, or None to leave it to the scheduler.

    None where there are fewer CPUs this process may use than ``workers``,
    or only one, or the platform cannot pin (macOS). ``taken`` holds the CPU
    of each living worker: a worker started to replace one that died takes
    the CPU it left free.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2 or workers > len(allowed):
        return None
    return choose_cpu(allowed, taken)


def pin(cpu: int) -> None:
    """Run the calling process (and the threads it starts from now on) on ``cpu`` only."""
    os.sched_setaffinity(0, {cpu})
