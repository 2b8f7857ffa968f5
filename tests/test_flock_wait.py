"""soapreceptor.flock_wait: an exclusive flock waited for without polling, within a time limit.

The other holder is a real second process (flock is between open files; a
child process that opens the file itself holds it against this one).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from soapreceptor import flock_wait

# Holds the lock until its stdin closes; says "held" once it has it.
_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_elsewhere(path: Path) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            yield holder
        finally:
            if holder.poll() is None:
                holder.kill()


def release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=60)


def free_elsewhere(path: Path) -> bool:
    """Whether another process could take the lock now."""
    probe = (
        "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"
    )
    return subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, check=False).returncode == 0


@pytest.fixture
def lock_file(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "writer.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    yield path, fd
    os.close(fd)


def test_a_free_lock_is_taken_at_once_without_waiting(lock_file: tuple[Path, int]) -> None:
    path, fd = lock_file
    assert flock_wait.lock_exclusive(fd, 5.0) is False
    assert not free_elsewhere(path)
    fcntl.flock(fd, fcntl.LOCK_UN)
    assert free_elsewhere(path)


def test_a_held_lock_is_taken_once_its_holder_lets_go(lock_file: tuple[Path, int]) -> None:
    path, fd = lock_file
    with held_elsewhere(path) as holder:
        outcome: list[bool] = []
        waiter = threading.Thread(target=lambda: outcome.append(flock_wait.lock_exclusive(fd, 60.0)))
        waiter.start()
        time.sleep(0.2)  # not a timing assertion: only gives the waiter time to queue before the release
        assert outcome == [], "the lock cannot be had while another process holds it"
        release(holder)
        waiter.join(timeout=60)
    assert outcome == [True], "taken, after waiting for the other holder"
    assert not free_elsewhere(path), "and held by this process now"
    fcntl.flock(fd, fcntl.LOCK_UN)


def test_a_wait_past_its_time_limit_gives_up_and_leaves_nothing_held(lock_file: tuple[Path, int]) -> None:
    path, fd = lock_file
    with held_elsewhere(path) as holder:
        with pytest.raises(TimeoutError, match=r"not free within 0\.2 s"):
            flock_wait.lock_exclusive(fd, 0.2)
        release(holder)
    # The thread that waited on the abandoned caller's behalf gets the lock
    # once the holder lets go, and must let it go again at once.
    deadline = time.monotonic() + 60
    while not free_elsewhere(path):
        assert time.monotonic() < deadline, "an abandoned wait kept the lock"
        time.sleep(0.05)
    assert flock_wait.lock_exclusive(fd, 5.0) is False
    fcntl.flock(fd, fcntl.LOCK_UN)


def test_an_abandoned_wait_survives_its_file_being_closed(tmp_path: Path) -> None:
    path = tmp_path / "writer.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    with held_elsewhere(path) as holder:
        with pytest.raises(TimeoutError):
            flock_wait.lock_exclusive(fd, 0.1)
        os.close(fd)  # the journal closed meanwhile: the waiting thread has its own descriptor
        release(holder)
    deadline = time.monotonic() + 60
    while not free_elsewhere(path):
        assert time.monotonic() < deadline, "the lock stayed held after its file was closed"
        time.sleep(0.05)


def test_a_descriptor_that_cannot_be_locked_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="Bad file descriptor"):
        flock_wait.lock_exclusive(987_654, 1.0)


def test_a_forked_child_waits_with_a_thread_of_its_own(lock_file: tuple[Path, int]) -> None:
    path, fd = lock_file
    with held_elsewhere(path) as holder:
        with pytest.raises(TimeoutError):
            flock_wait.lock_exclusive(fd, 0.1)  # the parent's waiting thread now exists
        release(holder)
    # The parent's thread does not exist in the child: it must make its own.
    with held_elsewhere(path) as holder, warnings.catch_warnings():
        # Python 3.12+ warns that a fork with threads running may deadlock the
        # child; gunicorn forks its workers just so, which is what this checks.
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
        if child == 0:  # pragma: no cover (the child reports through its exit status)
            assert holder.stdin is not None
            holder.stdin.close()  # the child's copy: the holder lets go when the parent closes its own
            child_fd = os.open(path, os.O_RDWR)
            try:
                os._exit(0 if flock_wait.lock_exclusive(child_fd, 60.0) else 1)
            except BaseException:
                os._exit(2)
        time.sleep(0.2)  # only so that the child queues before the release; no timing is asserted
        release(holder)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
