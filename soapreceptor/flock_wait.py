"""Waiting for an exclusive ``flock`` without polling it, for at most a given time.

``flock(LOCK_EX)`` sleeps until the lock is free, and the kernel wakes the
sleeper the moment it is; but it takes no time limit, and in a thread other
than the main one no signal can interrupt it. Trying ``LOCK_NB`` in a loop
can stop at a deadline, but every try wakes the thread (and wants the GIL)
whether the lock is free or not: with two busy workers and a dispatcher on
one journal, that polling cost about a tenth of the workers' CPU.

So each process has one thread that sleeps in ``flock(LOCK_EX)`` on behalf
of whoever waits, and the waiter waits for that thread, with a time limit. A
wait given up is not left holding anything: when the lock comes to the
thread for a waiter who has gone, the thread lets it go again.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading

__all__ = ["lock_exclusive"]


class _Ticket:
    """One wait for the lock: the thread's side (``granted``) and the waiter's (``abandoned``)."""

    __slots__ = ("abandoned", "done", "error", "fd", "granted", "guard")

    def __init__(self, fd: int) -> None:
        # A duplicate of the waiter's descriptor: the same open file, so the
        # same lock, but it stays valid if the waiter closes its own meanwhile.
        self.fd = os.dup(fd)
        self.done = threading.Event()
        self.guard = threading.Lock()
        self.granted = False
        self.abandoned = False
        self.error: OSError | None = None


class _Sleeper:
    """The thread of this process that sleeps in ``flock`` for the waiters."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.tickets: queue.SimpleQueue[_Ticket] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="soapreceptor-flock", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            ticket = self.tickets.get()
            try:
                fcntl.flock(ticket.fd, fcntl.LOCK_EX)
            except OSError as exc:
                ticket.error = exc
                os.close(ticket.fd)
                ticket.done.set()
                continue
            with ticket.guard:
                if not ticket.abandoned:
                    ticket.granted = True
            if not ticket.granted:
                fcntl.flock(ticket.fd, fcntl.LOCK_UN)
            os.close(ticket.fd)  # the lock stays with the open file, which the waiter still has
            ticket.done.set()


_sleeper: _Sleeper | None = None
_sleeper_lock = threading.Lock()


def _this_process_sleeper() -> _Sleeper:
    global _sleeper  # noqa: PLW0603 (one per process, made on first need)
    with _sleeper_lock:
        # A forked child has the parent's object but not its thread.
        if _sleeper is None or _sleeper.pid != os.getpid():
            _sleeper = _Sleeper()
        return _sleeper


def lock_exclusive(fd: int, timeout: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``; whether it had to wait for another holder.

    Raises :class:`TimeoutError` if the lock was not free within ``timeout``
    seconds, and :class:`OSError` if ``fd`` cannot be locked at all. The lock
    belongs to ``fd``'s open file, as any ``flock`` does: release it with
    ``flock(fd, LOCK_UN)`` (or by closing the file).
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        pass
    ticket = _Ticket(fd)
    _this_process_sleeper().tickets.put(ticket)
    ticket.done.wait(timeout)
    with ticket.guard:
        if not ticket.granted:
            ticket.abandoned = True
    if ticket.granted:
        return True
    if ticket.error is not None:
        raise ticket.error
    raise TimeoutError(f"the lock was not free within {timeout:g} s")
