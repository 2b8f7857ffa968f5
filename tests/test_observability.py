"""Seeing it work: /healthz, /readyz, /metrics added up across gunicorn's processes, JSON log lines."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from soapreceptor import metrics
from soapreceptor.signature import sign
from soapreceptor.timestamps import format_timestamp
from tests import support
from tests.support import ACCEPTED_EVENT, KEY_2, Server, amazon_envelope, post, wait_for


def signed(assignment: str, key: str = KEY_2) -> bytes:
    timestamp = format_timestamp(dt.datetime.now(dt.UTC))
    return amazon_envelope(
        signature=sign(key, timestamp), timestamp=timestamp, events=[{**ACCEPTED_EVENT, "AssignmentId": assignment}]
    )


def get(server: Server, path: str) -> tuple[int, str]:
    answer = post(server.url.rstrip("/") + path, b"", headers={}, method="GET")
    return answer.status, answer.body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_add_up_across_workers(server_factory: Callable[..., Server]) -> None:
    server = server_factory({})  # 2 workers and the embedded dispatcher
    for n in range(6):
        assert post(server.url, signed(f"M{n}")).status == 200
    for n in range(4):
        assert post(server.url, signed(f"R{n}", key="wrong")).status == 500
    server.wait_for_events(6)

    def settled() -> str | None:
        _, text = get(server, "/metrics")
        delivered = sample(text, "soapreceptor_dispatch_attempts_total", outcome="delivered")
        return text if delivered == 6 and sample(text, "soapreceptor_events", state="delivered") == 6 else None

    text = wait_for(settled, "the metrics to show 6 deliveries")
    assert sample(text, "soapreceptor_messages_received_total") == 10
    assert sample(text, "soapreceptor_messages_accepted_total", version="2006-05-05") == 6
    assert sample(text, "soapreceptor_messages_refused_total", reason="Client.SignatureMismatch") == 4
    assert sample(text, "soapreceptor_events_journaled_total") == 6
    assert sample(text, "soapreceptor_journal_commit_seconds_count") == 6
    # How long the disk stalled the workers' commits: present, whatever this disk did.
    assert re.search(r"^soapreceptor_journal_stalled_seconds_total [0-9.e+-]+$", text, re.MULTILINE)
    assert sample(text, "soapreceptor_hook_seconds_count") == 6
    assert sample(text, "soapreceptor_events", state="pending") == 0
    assert re.search(r"^soapreceptor_oldest_pending_seconds 0\.0$", text, re.MULTILINE), "nothing waits: 0"
    # Every worker answers with the same totals: several scrapes, one story.
    for _ in range(4):
        assert sample(get(server, "/metrics")[1], "soapreceptor_messages_received_total") == 10


def test_readiness(server_factory: Callable[..., Server]) -> None:
    ready = server_factory({}, name="ready")
    assert wait_for(lambda: get(ready, "/readyz") == (200, "ready\n"), "readiness")
    assert get(ready, "/healthz") == (200, "ok\n")
    alone = server_factory({"SOAPRECEPTOR_DISPATCHER": "off"}, name="alone")
    status, reason = get(alone, "/readyz")
    assert status == 503
    assert "no dispatcher has run on this journal yet" in reason
    assert get(alone, "/healthz") == (200, "ok\n")  # alive, just not ready
    # With no dispatcher, an accepted event waits, and /metrics says for how long.
    assert post(alone.url, signed("W1")).status == 200
    first = sample(get(alone, "/metrics")[1], "soapreceptor_oldest_pending_seconds")
    assert first > 0
    assert wait_for(
        lambda: sample(get(alone, "/metrics")[1], "soapreceptor_oldest_pending_seconds") > first + 0.05,
        "the oldest pending event's wait to grow",
    )


def test_json_log_lines(server_factory: Callable[..., Server]) -> None:
    server = server_factory({"SOAPRECEPTOR_LOG_FORMAT": "json"})
    answer = post(server.url, signed("J1"))
    assert answer.status == 200
    request_id = answer.headers["x-request-id"]

    def line_for_request() -> dict[str, object] | None:
        for line in server.log().splitlines():
            if request_id in line:
                return dict(json.loads(line))
        return None

    record = wait_for(line_for_request, "the request's log line")
    assert record["logger"] == "soapreceptor.access"
    assert record["request_id"] == request_id
    assert (record["version"], record["events"], record["outcome"], record["status"]) == (
        "2006-05-05",
        1,
        "accepted",
        "200",
    )
    assert isinstance(record["duration_ms"], float)


def test_metrics_are_made_once_whichever_thread_asks_first() -> None:
    import threading  # noqa: PLC0415

    from soapreceptor import metrics  # noqa: PLC0415

    metrics._made.clear()
    from prometheus_client import REGISTRY  # noqa: PLC0415

    for collector in list(REGISTRY._collector_to_names):
        if any(name.startswith("soapreceptor_") for name in REGISTRY._collector_to_names[collector]):
            REGISTRY.unregister(collector)
    barrier = threading.Barrier(8)
    made: list[object] = []

    def ask() -> None:
        barrier.wait()
        made.append(metrics.get())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(made) == 8
    assert all(m is made[0] for m in made)


def test_probes_and_scrapes_only_read_so_they_never_wait_for_the_journal(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """/readyz and /metrics answer while the journal's write lock is held elsewhere for as long as it takes.

    As a dispatcher running on idle CPU time may hold it, under load: the
    answers to MTurk need only the workers' spool, and so do the probes. A
    scrape reads what the spool holds but leaves moving it to the dispatcher.
    """
    journal = tmp_path / "journal.db"
    server = server_factory({"SOAPRECEPTOR_JOURNAL": str(journal)})
    assert wait_for(lambda: get(server, "/readyz") == (200, "ready\n"), "readiness")
    with closing(sqlite3.connect(journal, timeout=60)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        assert post(server.url, signed("L1")).status == 200
        assert get(server, "/readyz") == (200, "ready\n")
        status, text = get(server, "/metrics")
        assert status == 200
        assert sample(text, "soapreceptor_oldest_pending_seconds") > 0, "the message waits, in the spool"
        assert holder.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0, "the scrape moved nothing"
        holder.rollback()
    server.wait_for_events(1)  # the lock free, the dispatcher takes the message in and hands it on


# A process that takes a metrics directory as a gunicorn master does, forks a
# child that shares its lock as a worker does, prints the directory and both
# pids, and sleeps until killed.
_HOLDER = """
import os, sys, time
from soapreceptor import metrics
path, fd = metrics.server_directory(sys.argv[1])
child = os.fork()
if child == 0:
    time.sleep(600)
    os._exit(0)
print(path, os.getpid(), child, flush=True)
time.sleep(600)
"""


def test_a_metrics_directory_is_removed_once_no_process_of_its_server_lives(tmp_path: Path) -> None:
    legacy = tmp_path / f"{metrics.DIRECTORY_PREFIX}legacy"  # made before directories had an owner file
    legacy.mkdir()
    unrelated = tmp_path / "someone-elses"
    unrelated.mkdir()
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=support.REPO
    ) as holder:
        assert holder.stdout is not None
        path, parent, child = holder.stdout.readline().split()
        holders = support.process_tree(int(parent))  # it and its child
        try:
            directory = Path(path)
            assert directory.parent == tmp_path
            assert directory.name.startswith(metrics.DIRECTORY_PREFIX)
            assert metrics.remove_abandoned(str(tmp_path)) == [], "its server is alive"
            # The master killed, its worker still running: the worker still writes its files there.
            os.kill(int(parent), signal.SIGKILL)
            holder.wait(timeout=support.DEADLINE)
            assert metrics.remove_abandoned(str(tmp_path)) == [], "a worker of its server is alive"
            assert directory.is_dir()
            os.kill(int(child), signal.SIGKILL)
            support.wait_gone(holders, "the orphaned child to exit")
            assert metrics.remove_abandoned(str(tmp_path)) == [str(directory)]
            assert not directory.exists()
            # Only directories with an owner file that nobody holds go.
            assert legacy.is_dir()
            assert unrelated.is_dir()
        finally:
            support.kill_all(holders)


def metrics_directories(parent: Path) -> list[Path]:
    """The servers' metrics directories in ``parent``."""
    return sorted(parent.glob(f"{metrics.DIRECTORY_PREFIX}*"))


def test_a_killed_servers_metrics_directory_goes_when_the_next_server_starts(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()

    first = server_factory({"TMPDIR": str(shared)}, name="first")
    (killed,) = metrics_directories(shared)
    assert first.process is not None
    tree = support.process_tree(first.process.pid)
    os.kill(first.process.pid, signal.SIGKILL)  # no on_exit: the master cannot clean up
    first.process.wait(timeout=support.DEADLINE)
    support.wait_gone(tree, "the killed master's workers and dispatcher to exit")
    assert metrics_directories(shared) == [killed]

    second = server_factory({"TMPDIR": str(shared)}, name="second")
    (own,) = metrics_directories(shared)
    assert own != killed, "the next server removed the killed one's directory and made its own"
    second.stop()
    assert metrics_directories(shared) == [], "a server that stops removes its directory"


def test_a_binary_upgrade_leaves_each_master_its_own_metrics_directory(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """gunicorn's upgrade in place (USR2 to the old master, then TERM): /metrics keeps working throughout.

    The new master is started with the environment gunicorn had before the
    settings set PROMETHEUS_MULTIPROC_DIR, so it makes a directory of its
    own; the old master removes only its own when it goes, and the new one
    counts from zero (a counter reset, as after any restart).
    """
    shared = tmp_path / "shared-tmp"
    shared.mkdir()

    server = server_factory({"TMPDIR": str(shared)})
    assert server.process is not None
    old = server.process.pid
    (old_directory,) = metrics_directories(shared)
    assert post(server.url, signed("BEFORE")).status == 200

    os.kill(old, signal.SIGUSR2)
    new = 0
    try:
        new = int(
            wait_for(
                lambda: next(iter(set(re.findall(r"Listening at: \S+ \((\d+)\)", server.log())) - {str(old)}), None),
                "the new master to listen",
            )
        )
        assert support.process_tree(new)[0].parent == old, "the new master is the old one's child, as gunicorn makes it"
        wait_for(lambda: len(metrics_directories(shared)) == 2, "the new master's own metrics directory")
        snapshot = support.process_tree(old)  # breadth first: a parent before its children
        theirs = {new}
        for proc in snapshot:
            if proc.parent in theirs:
                theirs.add(proc.pid)
        old_tree = [proc for proc in snapshot if proc.pid not in theirs]

        server.process.send_signal(signal.SIGTERM)  # the old master stops gracefully; the new one serves on
        server.process.wait(timeout=support.DEADLINE)
        support.wait_gone(old_tree, "the old master's workers and dispatcher to exit")
        (new_directory,) = metrics_directories(shared)
        assert new_directory != old_directory, "the old master removed its own directory, and only that"

        assert post(server.url, signed("AFTER")).status == 200
        status, text = get(server, "/metrics")
        assert status == 200
        assert sample(text, "soapreceptor_messages_accepted_total", version="2006-05-05") == 1, "the new master's own"
    finally:
        new_tree = support.process_tree(new) if new else []
        try:
            if new_tree:
                os.kill(new, signal.SIGTERM)
                support.wait_gone(new_tree, "the new master and its processes to exit")
        finally:
            support.kill_all(new_tree)  # whatever did not stop in time
    assert metrics_directories(shared) == [], "the new master removed its directory when it stopped"
