"""The dispatcher: journal -> the user's hook, one event at a time, at least once, with retries.

A dispatcher claims the oldest due event (a lease, so that no two dispatchers
deliver the same event at once, and so that an event claimed by a dispatcher
that died is taken again when the lease runs out), calls the hook with a
time limit, and records the outcome: delivered, or failed and due again after
a backoff, or dead after the last attempt.

The default schedule follows Svix's: retries 5 s, 5 min, 30 min, 2 h, 5 h,
10 h and 10 h after the previous attempt (eight attempts in all, about 28 hours),
each delay spread by +-20 % jitter so that a burst of failures does not come
back as a burst.

Under gunicorn the receptor starts one dispatcher process beside its workers
(see ``gunicorn_config``); ``soapreceptor dispatch`` runs one on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from . import metrics, progress
from .hooks import Hook
from .journal import Journal, JournalError, Outcome, StoredEvent
from .progress import ProgressLog

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

logger = logging.getLogger("soapreceptor.dispatch")

#: Seconds to wait before each retry (the first attempt is immediate).
DEFAULT_SCHEDULE: Final[tuple[float, ...]] = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_HOOK_TIMEOUT: Final[float] = 30.0
#: Seconds between a dispatcher's "I am alive" records in the journal (read by /readyz).
HEARTBEAT_EVERY: Final[float] = 5.0
#: Seconds between the dispatcher's checkpoints of the journal (see Journal.checkpoint). Often, so that
#: each copies little: a checkpoint writes what the write-ahead log gathered since the last one and syncs
#: it, and the workers' syncs behind it wait for all of it (see spool.READ_BYTES). Every second, under
#: load, that was megabytes at a time; a checkpoint with nothing new to copy syncs nothing.
CHECKPOINT_EVERY: Final[float] = 0.1
#: The most events a dispatcher claims at once, and how long a batch may keep starting new ones.
MAX_BATCH: Final[int] = 64
BATCH_BUDGET: Final[float] = 1.0
#: After a batch claimed while other writers held the journal, a dispatcher pauses as long as it
#: then held the journal itself (so at most half of the time is its), within these bounds (seconds).
YIELD_AT_LEAST: Final[float] = 0.001
YIELD_WHEN_BUSY: Final[float] = 0.01
#: Seconds a dispatcher that has caught up waits for more events before its next batch.
GATHER: Final[float] = 0.05
JITTER: Final[float] = 0.2


class HookTimeout(Exception):
    """The hook ran past its time limit."""


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed event again, and when to give up."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = JITTER

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def next_delay(self, attempts: int, rng: random.Random) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones; None when there is none."""
        if attempts > len(self.schedule):
            return None
        base = self.schedule[attempts - 1]
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


def parse_schedule(text: str) -> tuple[float, ...]:
    """Read ``SOAPRECEPTOR_RETRY_SCHEDULE``: comma-separated seconds, e.g. ``5,300,1800``."""
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of seconds, e.g. 5,300,1800") from None
    if any(delay < 0 for delay in delays):
        raise ValueError(f"{text!r} has a negative delay")
    return delays


@dataclass
class Dispatcher:
    """Delivers journaled events to ``hook``. Call :meth:`run` (a loop) or :meth:`step` (one event)."""

    journal: Journal
    hook: Hook
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    idle_wait: float = 0.1
    owner: str = field(default_factory=lambda: f"{owner_prefix(os.getpid())}{random.getrandbits(32):08x}")
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.time
    stopping: bool = False
    #: The hook's time limit while :meth:`run` or :meth:`step` runs (see :meth:`_watching`); none otherwise.
    _watchdog: _Watchdog = field(default_factory=lambda: _Watchdog(0), init=False, repr=False)
    _on_success: tuple[Histogram, Counter] | None = field(default=None, init=False, repr=False)

    @property
    def lease(self) -> float:
        # Longer than any attempt may take, so a live dispatcher never loses its claim.
        return self.hook_timeout * 2 + 30

    def step(self) -> StoredEvent | None:
        """Claim and deliver one due event, recording the outcome; return it (as claimed), or None if none was due."""
        claimed = self.journal.claim(self.owner, self.lease, self.clock())
        if claimed is not None:
            with self._watching():
                outcome = self._attempt(claimed, counted=True)
            self._settled(self.journal.settle(self.owner, [outcome], self.clock()))
        return claimed

    @contextlib.contextmanager
    def _watching(self) -> Iterator[None]:
        """The hook's time limit in place for the block (one SIGALRM handler however many calls it makes)."""
        self._watchdog = _Watchdog.install(self.hook_timeout)
        try:
            yield
        finally:
            self._watchdog.uninstall()
            self._watchdog = _Watchdog(0)

    def _attempt(self, claimed: StoredEvent, *, counted: bool) -> Outcome:
        """Hand one claimed event to the hook; how it went.

        ``counted``: the claim already counted this attempt (:meth:`Journal.claim`);
        otherwise the outcome counts it (:meth:`Journal.claim_batch`).
        """
        event = claimed.event
        attempt = claimed.attempts if counted else claimed.attempts + 1
        count = not counted
        if attempt > self.retry.max_attempts:
            # Earlier attempts ended with the dispatcher itself dying (the
            # supervisor freed the claim): give up as after any last attempt.
            logger.error("event %d is dead: its dispatcher died during each of its attempts", claimed.id)
            return Outcome(claimed.id, "dead", claimed.last_error or "the dispatcher died", count=count)
        started = time.perf_counter()
        watchdog = self._watchdog
        try:
            watchdog.begin()
            try:
                self.hook(event)
            finally:
                watchdog.end()
        except Exception as exc:
            metrics.get().hook_duration.observe(time.perf_counter() - started)
            error = _describe(exc)
            delay = self.retry.next_delay(attempt, self.rng)
            retry_at = None if delay is None else self.clock() + delay
            metrics.get().dispatch_attempts.labels("dead" if retry_at is None else "failed").inc()
            if retry_at is None:
                logger.error(
                    "event %d (%s hit=%s assignment=%s) is dead after %d attempts: %s",
                    claimed.id, event.event_type, event.hit_id, event.assignment_id, attempt, error,
                )  # fmt: skip
                return Outcome(claimed.id, "dead", error, count=count)
            logger.warning(
                "event %d (%s) failed attempt %d of %d, next in %.0f s: %s",
                claimed.id, event.event_type, attempt, self.retry.max_attempts, delay, error,
            )  # fmt: skip
            return Outcome(claimed.id, "pending", error, retry_at, count=count)
        took, delivered = self._success_metrics()
        took.observe(time.perf_counter() - started)
        delivered.inc()
        return Outcome(claimed.id, "delivered", count=count)

    def _success_metrics(self) -> tuple[Histogram, Counter]:
        # Looked up once, as they are recorded for every event: finding them (a
        # labelled child above all) costs more than recording.
        if self._on_success is None:
            found = metrics.get()
            self._on_success = (found.hook_duration, found.dispatch_attempts.labels("delivered"))
        return self._on_success

    def run(self, should_continue: Callable[[], bool] = lambda: True) -> None:
        """Deliver events until :meth:`stop` is called or ``should_continue`` returns False.

        Events are claimed in batches, oldest first, and the outcomes of a
        batch are recorded in the journal with the claim of the next one: one
        commit per batch. In between, the progress log (:mod:`soapreceptor.progress`)
        notes each event before the hook gets it and after it took it, so a
        dispatcher killed at any moment still leaves at most one event handed
        on but not recorded as delivered. A failed attempt is recorded at once.
        The batch grows (up to :data:`MAX_BATCH`) while batches finish quickly
        and shrinks when they do not; no new event is started once a batch
        has run :data:`BATCH_BUDGET` seconds (its rest is given back).

        The journal is shared with the receptor's workers, whose commits MTurk
        waits for: a dispatcher that had to wait for them pauses before its
        next batch as long as its own transaction held the journal (between
        :data:`YIELD_AT_LEAST` and :data:`YIELD_WHEN_BUSY`), and one that has
        caught up waits :data:`GATHER` for events to gather rather than taking
        them one transaction each as they come.
        """
        logger.info("dispatcher %s started on %s", self.owner, self.journal.path)
        log = ProgressLog(progress.path_for(self.journal.path, self.owner))
        with self._watching():
            self._run(log, should_continue)
        logger.info("dispatcher %s stopped", self.owner)

    def _run(self, log: ProgressLog, should_continue: Callable[[], bool]) -> None:
        last_beat = last_checkpoint = 0.0
        outcomes: list[Outcome] = []
        size = 1
        while not self.stopping and should_continue():
            try:
                if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                    self.journal.heartbeat(self.owner, self.clock())
                    last_beat = time.monotonic()
                if time.monotonic() - last_checkpoint >= CHECKPOINT_EVERY:
                    # The receptor's workers leave checkpoints to the dispatcher, off the answer path.
                    self.journal.checkpoint()
                    last_checkpoint = time.monotonic()
                lease = self.lease + BATCH_BUDGET
                lost, claimed = self.journal.claim_batch(self.owner, lease, size, outcomes, self.clock())
                log.clear()
                outcomes = []
                self._settled(lost)
                if not claimed:
                    size = 1
                    time.sleep(self.idle_wait)
                    continue
                if self.journal.contended:
                    # The receptor's workers are writing too (MTurk is waiting for
                    # their answers): leave them the journal for a moment, and take
                    # bigger batches less often. The events are safe meanwhile.
                    time.sleep(min(max(self.journal.held, YIELD_AT_LEAST), YIELD_WHEN_BUSY))
                started = time.monotonic()
                outcomes = self._deliver(claimed, log, started)
                if len(claimed) < size:
                    # Caught up: let the next events gather for a moment rather than
                    # take them one transaction each as they trickle in.
                    time.sleep(GATHER)
                took = time.monotonic() - started
                size = min(size * 2, MAX_BATCH) if took < BATCH_BUDGET / 20 else max(size // 2, 1)
            except JournalError as exc:
                # A full disk or a long lock is not the end: wait and try again.
                logger.error("dispatcher: %s; retrying in 1 s", exc)
                time.sleep(1.0)
        try:
            if outcomes:
                self._settled(self.journal.settle(self.owner, outcomes, self.clock()))
            log.close()
        except JournalError as exc:
            # The log stays: whoever frees this dispatcher's claims records what it says.
            logger.error("dispatcher: could not record the last outcomes before stopping: %s", exc)

    def _deliver(self, claimed: list[StoredEvent], log: ProgressLog, started: float) -> list[Outcome]:
        """Hand a claimed batch to the hook in order; the outcomes not yet in the journal."""
        outcomes: list[Outcome] = []
        for number, stored in enumerate(claimed):
            if number and (self.stopping or time.monotonic() - started > BATCH_BUDGET):
                self.journal.unclaim(self.owner, [rest.id for rest in claimed[number:]], self.clock())
                break
            log.started(stored.id)
            outcome = self._attempt(stored, counted=False)
            outcomes.append(outcome)
            if outcome.state == "delivered":
                log.delivered(stored.id)
            else:
                # The log has no room for an error or a retry time: record them (and all before) now.
                self._settled(self.journal.settle(self.owner, outcomes, self.clock()))
                log.clear()
                outcomes = []
        return outcomes

    @staticmethod
    def _settled(lost: list[int]) -> None:
        for event_id in lost:
            logger.warning("event %d was delivered but its lease had passed to another dispatcher", event_id)

    def stop(self) -> None:
        self.stopping = True


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


class _Watchdog:
    """The hook's time limit: raise :class:`HookTimeout` in a hook call that runs longer than ``seconds``.

    One SIGALRM handler stays in place for many calls (a whole
    :meth:`Dispatcher.run`), and the timer is set only when none is running:
    setting a handler and a timer and taking both back around every call
    would be four system calls per event. The timer may then go off before a
    call's own limit (it was set for an earlier call), never after it: the
    handler sets it again for the time left. An alarm between calls is ignored.

    SIGALRM interrupts Python code and blocking system calls; a hook stuck
    inside a C extension that never returns to Python cannot be interrupted,
    and then its lease runs out and another dispatcher may take the event.
    Outside the main thread (no signals there), or with no limit set, it does
    nothing.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False  # whether its handler is in place
        self.deadline = 0.0
        self.active = False
        self.pending = False  # whether the timer is running
        self.previous: Any = None

    @classmethod
    def install(cls, seconds: float) -> _Watchdog:
        """A watchdog with its handler in place, where a limit can be kept."""
        watchdog = cls(seconds)
        if seconds > 0 and _in_main_thread():
            watchdog.previous = signal.signal(signal.SIGALRM, watchdog._alarm)
            watchdog.armed = True
        return watchdog

    def uninstall(self) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
            self.armed = False

    def begin(self) -> None:
        """A hook call starts now."""
        if not self.armed:
            return
        self.deadline = time.monotonic() + self.seconds
        self.active = True
        if not self.pending:
            self.pending = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def end(self) -> None:
        """The hook call is over."""
        self.active = False

    def _alarm(self, signum: int, frame: FrameType | None) -> None:
        self.pending = False
        if not self.active:
            return
        left = self.deadline - time.monotonic()
        if left > 0:
            self.pending = True
            signal.setitimer(signal.ITIMER_REAL, left)
            return
        self.active = False
        raise HookTimeout(f"the hook ran longer than {self.seconds:g} s")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_until_signalled(dispatcher: Dispatcher, parent: int | None = None) -> None:
    """Run ``dispatcher`` until SIGTERM/SIGINT, or until process ``parent`` is gone.

    The embedded dispatcher is given its gunicorn master as ``parent``: if the
    master is killed (even with SIGKILL), the dispatcher notices and exits
    instead of living on as an orphan beside the next master's own.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        dispatcher.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    dispatcher.run(lambda: parent is None or os.getppid() == parent)


def owner_prefix(pid: int) -> str:
    """The start of the lease owner name of a dispatcher running as process ``pid`` on this host."""
    return f"{socket.gethostname()}:{pid}:"


def supervise(make_dispatcher: Callable[[], Dispatcher], parent: int | None = None) -> int:
    """Run a dispatcher in a child process and start a new one whenever it dies.

    A hook can take its process down in ways no ``except`` catches (a crash in
    a C extension, ``os._exit``, the kernel's OOM killer). The events are safe
    in the journal either way, but nothing would deliver them until the next
    restart; so the dispatcher runs in a child, restarted after 1 s, then up to
    30 s if it keeps dying. Returns when SIGTERM/SIGINT arrives or ``parent``
    is gone (the child is stopped first, and finishes the event in hand).
    """
    stopping = False
    child = 0

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child:
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisor = os.getpid()
    journal = make_dispatcher().journal
    _free_claims_of_dead_dispatchers(journal)
    delay = 1.0
    while not stopping and (parent is None or os.getppid() == parent):
        child = os.fork()
        if child == 0:  # pragma: no cover (runs in the child; covered by the gunicorn tests)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                run_until_signalled(make_dispatcher(), parent=supervisor)
            except BaseException:
                logger.exception("dispatcher crashed")
                code = 1
            os._exit(code)
        started = time.monotonic()
        status = _wait_child(child, lambda: stopping or (parent is not None and os.getppid() != parent))
        died, child = child, 0
        if os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) != 0:
            # The event in hand when it died is not lost: free its claim now
            # rather than when the lease runs out, with the cause as its error.
            try:
                freed = journal.release(owner_prefix(died), f"the dispatcher process died: {_exit_reason(status)}")
                if freed:
                    logger.error("freed %d event(s) claimed by the dead dispatcher %d", freed, died)
            except JournalError as exc:
                logger.error("could not free the claims of the dead dispatcher %d: %s", died, exc)
        if stopping or (parent is not None and os.getppid() != parent):
            break
        if time.monotonic() - started > 60:
            delay = 1.0  # it ran a good while: this is not a crash loop
        logger.error("the dispatcher process exited (%s); starting another in %.0f s", _exit_reason(status), delay)
        end = time.monotonic() + delay
        while not stopping and time.monotonic() < end:
            time.sleep(0.1)
        delay = min(delay * 2, 30.0)
    return 0


def _free_claims_of_dead_dispatchers(journal: Journal) -> None:
    """Free claims left by dispatchers of this host that no longer run (a SIGKILLed server, a reboot).

    Without this their events would wait for their leases to run out.
    """
    host = socket.gethostname()
    # Claims, and progress logs (a dispatcher killed between batches leaves one with no claim).
    owners = dict.fromkeys([*journal.lease_owners(), *progress.logs_of(journal.path, f"{host}:")])
    for owner in owners:
        name, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if name != host or not pid_text.isdigit() or process_exists(int(pid_text)):
            continue
        try:
            freed = journal.release(owner_prefix(int(pid_text)), "its dispatcher was gone when a dispatcher started")
        except JournalError as exc:
            logger.error("could not free the claims of the gone dispatcher %s: %s", owner, exc)
            continue
        if freed:
            logger.warning("freed %d event(s) claimed by dispatcher %s, which no longer runs", freed, owner)


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (in this pid namespace), whoever's it is."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process with that pid: not ours to judge
    return True


def _wait_child(pid: int, give_up: Callable[[], bool]) -> int:
    """Wait for child ``pid``; if ``give_up()`` turns true first, stop it and wait for that."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if give_up():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.1)


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
