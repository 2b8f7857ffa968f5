"""``make bench``: soapreceptor, a naive spyne receptor and the bare limit, side by side, in one run.

    python -m benchmarks.harness [--duration 8] [--rounds 3] [--sizes 1,10,100] [--out benchmarks/results]

For each message size, in several rounds, each receptor in turn (the order
rotating from round to round) is started under the same gunicorn settings,
checked (it must accept a signed message and refuse a forged one), warmed
up, and loaded with wrk at full speed; then again at half of soapreceptor's
full-speed rate, for latency. At one size (``--diagnostic-size``), soapreceptor
without its dispatcher and without its journal write run at full speed beside
them, to show where its time goes, and after each of soapreceptor's paced runs the
disk alone is timed, written and synced at that run's rate (``benchmarks/disk.py``):
no durable receptor answers sooner than its disk syncs. Around each run of a receptor with the journal its
own ``/metrics`` is read, for how many messages waited over 10 ms for their journal commit during the run
(the disk-alone probe can only time the disk after it); and after the probe soapreceptor runs paced once more
with its spool and journal in memory (tmpfs, where there is room), for its code's latency without the disk.
soapreceptor must also hold in its journal every message it answered 200. Then the in-process pipeline per message size.
Writes ``results.md``, ``throughput.png`` and ``runs.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import gunicorn.config

from soapreceptor import dispatch
from soapreceptor.worker import http_parser

from . import disk, inprocess, load, payloads, report, servers
from .report import Run

#: How long wrk loads a freshly started receptor before the measured run (not counted).
WARMUP_SECONDS = 1.0
#: The threaded worker classes --worker-class names by a word, as the results describe them.
_WORKER_CLASSES = {
    "soapreceptor": "soapreceptor.worker (gthread, a thread staying with a busy kept-alive connection)",
    "gthread": "gthread",
}


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each measured wrk run (8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per message size (3)")
    parser.add_argument("--sizes", default="1,10,100", help="events per message, comma-separated (1,10,100)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections at full speed (16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of every receptor (2)")
    parser.add_argument(
        "--worker-class",
        default="soapreceptor",
        help="gunicorn worker class of every receptor (soapreceptor: soapreceptor.worker as shipped;"
        " gthread: plain gthread; or any class gunicorn takes)",
    )
    parser.add_argument("--threads", type=int, default=8, help="threads per threaded worker (8, as shipped)")
    parser.add_argument(
        "--diagnostic-size",
        type=int,
        default=10,
        help="events per message of the diagnostic runs (soapreceptor without its dispatcher, without its journal)"
        " measured beside the three at full speed (10; 0: none)",
    )
    parser.add_argument("--inprocess-messages", type=int, default=300, help="messages per in-process sample (300)")
    parser.add_argument(
        "--dispatch-events", type=int, default=20000, help="events per sample of the dispatcher alone (20000)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG (no matplotlib needed)")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--sizes: {args.sizes!r} is not a comma-separated list of whole numbers")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes: each message carries at least one event")
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    return args


class Bench:
    """One benchmark run: its settings, its scratch directory and what it measured."""

    def __init__(self, args: argparse.Namespace, scratch: Path, memory: Path | None = None) -> None:
        self.args = args
        self.scratch = scratch
        #: A directory in memory (tmpfs) for soapreceptor's in-memory runs; None: no such runs.
        self.memory = memory
        self.runs: list[Run] = []
        self.disk: list[report.DiskRun] = []
        self.serial = 0
        self.started = 0

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def _server(self, receptor: servers.Receptor, connections: int) -> servers.Server:
        self.started += 1
        parent = self.memory if receptor.in_memory and self.memory is not None else self.scratch
        return servers.Server(
            receptor,
            parent / f"{self.started:03d}-{receptor.name.replace(' ', '-').replace(',', '')}",
            workers=self.args.workers,
            worker_class=self.args.worker_class,
            threads=self.args.threads,
            connections=connections,
        )

    def _load(self, server: servers.Server, template: Path, seconds: float, connections: int, rate: float) -> load.Load:
        first, self.serial = self.serial, self.serial + 10**9  # far apart: wrk's threads interleave theirs
        return load.run(
            server.url,
            template,
            first_serial=first,
            seconds=seconds,
            connections=connections,
            threads=self.args.wrk_threads,
            rate=rate,
        )

    def measure(self, receptor: servers.Receptor, events: int, number: int, kind: str, target: float = 0) -> Run:
        template = load.write_template(self.scratch / f"template-{events}.xml", events)
        # Full speed: no rate, wrk as fast as the answers come; paced: on a schedule of ``target`` a second.
        connections, rate = self.args.connections, 0.0
        if kind == "paced":
            connections, rate = paced_connections(target, self.args.wrk_threads), target
        # Each worker takes its share of the connections (see benchmarks/gunicorn_bench.py).
        with self._server(receptor, connections) as server:
            warm = self._load(server, template, WARMUP_SECONDS, connections, rate)
            before = _delivery(server.journal) if receptor.journaled else None
            # One /metrics page each side of the run: the commits and the stalls read at the same instant.
            page_before = server.metrics() if receptor.journaled else None
            cpu = server.cpu_seconds()
            measured = self._load(server, template, self.args.duration, connections, rate)
            cpu = server.cpu_seconds() - cpu
            page_after = server.metrics() if receptor.journaled else None
            after = _delivery(server.journal) if receptor.journaled else None
            rss = server.peak_rss_kib()
        backlog = delivered_rate = commits = slow_commits = stalled_share = None
        if page_before is not None and page_after is not None:
            waits_before, waits_after = journal_waits(page_before), journal_waits(page_after)
            commits, slow_commits = (now - then for now, then in zip(waits_after, waits_before, strict=True))
            stalled = journal_stalled(page_after) - journal_stalled(page_before)
            # Each worker's stalls are its own time (one commit at a time); their average over the workers is
            # no more than the time when any of them was stalled, so the share never overstates the disk's part.
            stalled_share = stalled / server.workers / measured.seconds
        if before is not None and after is not None:
            delivered_rate = (after[0] - before[0]) / measured.seconds
            backlog = after[1]
        if receptor.journaled:
            # The start check's messages, the warm-up's and the measured run's: each answered 200, each must be stored.
            _check_journaled(server.journal, receptor.name, servers.CHECK_ACCEPTED + warm.requests + measured.requests)
        self._discard(server)
        run = Run(
            receptor=receptor.name,
            events=events,
            round=number,
            kind=kind,
            rate=measured.rate,
            p50_ms=measured.p50_ms,
            p99_ms=measured.p99_ms,
            peak_rss_kib=rss,
            errors=measured.errors,
            refused=measured.refused,
            backlog=backlog,
            delivered_rate=delivered_rate,
            cpu_us=cpu / measured.requests * 1e6 if measured.requests else None,
            commits=commits,
            slow_commits=slow_commits,
            stalled_share=stalled_share,
            # Only a paced load has times to be late for: at full speed each request leaves when a connection is free.
            late_p99_ms=measured.late_p99_ms if rate else None,
            due_p99_least_ms=measured.due_p99_least_ms if rate else None,
            due_p99_most_ms=measured.due_p99_most_ms if rate else None,
        )
        self.log(
            f"  {kind:5} {receptor.name:13} {events:3d} events/msg: {run.rate:8.0f} msg/s  "
            f"p50 {run.p50_ms:6.1f} ms  p99 {run.p99_ms:7.1f} ms  rss {rss / 1024:5.1f} MiB"
            + (f"  p99 from due {due[0]:.1f}-{due[1]:.1f} ms" if (due := run.due_p99_ms) is not None else "")
            + (f"  cpu {run.cpu_us:5.0f} µs/msg" if run.cpu_us is not None else "")
            + (f"  delivered {delivered_rate:,.0f} events/s, backlog {backlog}" if delivered_rate is not None else "")
            + (
                f"  journal commits over {disk.SLOW_MS:g} ms: {slow_commits} of {commits}"
                if commits is not None
                else ""
            )
            + (f"  disk stalled {stalled_share * 100:.2f} % of the run" if stalled_share is not None else "")
        )
        if measured.refused or measured.errors:
            raise SystemExit(f"{receptor.name} refused {measured.refused} and failed {measured.errors} requests")
        self.runs.append(run)
        return run

    def disk_alone(self, events: int, number: int, rate: float) -> report.DiskRun:
        """The disk alone, storing messages as soapreceptor's paced run in round ``number`` did (benchmarks/disk.py)."""
        size = len(payloads.message(events, 0, stamp=payloads.timestamp()))
        syncs = disk.measure(
            self.scratch / "disk", writers=self.args.workers, rate=rate, size=size, seconds=self.args.duration
        )
        self.log(
            f"  disk alone {rate:8.0f} msg/s of {size:,} bytes, {syncs.syncs} syncs: p50 {syncs.p50_ms:6.2f} ms  "
            f"p99 {syncs.p99_ms:7.1f} ms  slowest {syncs.max_ms:7.1f} ms  over {disk.SLOW_MS:g} ms: {syncs.slow}"
        )
        run = report.DiskRun(events, number, rate, size, self.args.workers, syncs)
        self.disk.append(run)
        return run

    @staticmethod
    def _discard(server: servers.Server) -> None:
        # A run leaves tens of megabytes of journal for the kernel to write back: done now, and
        # the files gone, so that it does not happen (and cost) during the next receptor's run.
        shutil.rmtree(server.workdir, ignore_errors=True)
        os.sync()

    def run(self) -> int:
        for events in self.args.sizes:
            self.log(f"{events} event(s) per message")
            compared = servers.RECEPTORS
            if events == self.args.diagnostic_size:
                compared += servers.DIAGNOSTICS
            for number in range(self.args.rounds):
                for receptor in _rotated(compared, number):
                    self.measure(receptor, events, number, "peak")
            peak = statistics.median(
                r.rate for r in self.runs if (r.receptor, r.events, r.kind) == (report.SOAPRECEPTOR, events, "peak")
            )
            for number in range(self.args.rounds):
                for receptor in _rotated(servers.RECEPTORS, number):
                    paced = self.measure(receptor, events, number, "paced", target=peak / 2)
                    if receptor.name == report.SOAPRECEPTOR and events == self.args.diagnostic_size:
                        self.disk_alone(events, number, paced.rate)
                        if self.memory is not None:
                            self.measure(servers.IN_MEMORY, events, number, "paced", target=peak / 2)
        self.log("in-process pipeline")
        seconds = inprocess.measure(
            self.scratch / "inprocess", self.args.sizes, self.args.inprocess_messages, self.args.rounds
        )
        self.log("dispatcher alone")
        dispatched = inprocess.dispatcher_rate(
            self.scratch / "dispatcher", self.args.sizes, self.args.dispatch_events, self.args.rounds
        )
        return self.write(seconds, dispatched)

    def write(self, seconds: dict[str, dict[int, float]], dispatched: dict[int, float]) -> int:
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        table = report.rows(self.runs, seconds, dispatched)
        (out / "results.md").write_text(report.markdown(table, self.runs, self.context(), self.disk))
        raw = {
            "runs": [run.as_dict() for run in self.runs],
            "inprocess_seconds": seconds,
            "dispatcher_events_per_second": dispatched,
            "disk_alone": [run.as_dict() for run in self.disk],
        }
        (out / "runs.json").write_text(json.dumps(raw, indent=1) + "\n")
        if not self.args.no_chart:
            report.chart(table, out / "throughput.png")
        print((out / "results.md").read_text())
        return 0

    def context(self) -> dict[str, str]:
        args = self.args
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
            "software": f"CPython {platform.python_version()}, {_wrk_version()}, SQLite {sqlite3.sqlite_version}",
            "servers": f"gunicorn {importlib.metadata.version('gunicorn')}, reading requests with"
            f" {http_parser(gunicorn.config.Config())}; {args.workers}"
            f" {_WORKER_CLASSES.get(args.worker_class, args.worker_class)} workers"
            + (f" x {args.threads} threads" if args.worker_class in _WORKER_CLASSES else "")
            + ", each taking at most its share of the keep-alive connections and, where there is a CPU for each,"
            " running on one of its own (soapreceptor's SOAPRECEPTOR_CPU_AFFINITY=auto), scheduled SCHED_BATCH"
            " (SOAPRECEPTOR_SCHED_POLICY=batch); the same settings for all three (benchmarks/gunicorn_bench.py)",
            "soapreceptor": "as shipped: full verification, each message synced to its worker's spool before the "
            "answer, the embedded dispatcher moving them into the journal (WAL, synchronous=FULL) and handing every "
            "event to a no-op hook",
            "load": f"wrk, {args.wrk_threads} threads, {args.connections} keep-alive connections at full speed; "
            f"{WARMUP_SECONDS:g} s warm-up then {args.duration:g} s measured per run; every message different "
            "(its own HIT and assignment ids), signed with a current timestamp",
            "rounds": f"{args.rounds} per size, receptor order rotating each round; medians reported",
        }


def paced_connections(rate: float, threads: int) -> int:
    """Connections for a paced load of ``rate`` requests a second: each sends about every load.PACE_MS.

    At least one a wrk thread. While a few wait on slow answers, the others keep to the schedule.
    """
    return max(threads, math.ceil(rate * load.PACE_MS / 1000))


def _rotated(items: Sequence[servers.Receptor], number: int) -> list[servers.Receptor]:
    shift = number % len(items)
    return [*items[shift:], *items[:shift]]


def journal_waits(metrics: str) -> tuple[int, int]:
    """From a receptor's ``/metrics`` page: messages committed to its journal so far, and how many waited over SLOW_MS.

    The receptor times each message's commit (from handing it to the group
    commit to its sync's return: waiting for the sync before it included) in a
    histogram with a bucket at :data:`disk.SLOW_MS`. Read before and after a
    run, it tells how much of that run's latency the storage took while the
    run went on, where the disk-alone probe can only time the disk after it.
    """
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415 (as in _delivery)

    bound = disk.SLOW_MS / 1000
    count = within = None
    for family in text_string_to_metric_families(metrics):
        if family.name != "soapreceptor_journal_commit_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_bucket") and math.isclose(float(sample.labels["le"]), bound):
                within = sample.value
    if count is None or within is None:
        raise ValueError(f"no journal-commit histogram with a {disk.SLOW_MS:g} ms bucket in the receptor's /metrics")
    return int(count), int(count - within)


def journal_stalled(metrics: str) -> float:
    """From a receptor's ``/metrics`` page: the seconds its workers' journal syncs have run past 10 ms, added up.

    The receptor's ``soapreceptor_journal_stalled_seconds`` counter (see
    :mod:`soapreceptor.group_commit`). Read before and after a run, over the
    workers and the run's length, it is the share of the run during which
    the disk held a sync back. Linux sends a disk one cache flush at a time
    on each of its queues, so a message that arrives while a sync is held
    cannot be synced before that sync ends, whichever process writes it: on
    a disk with one queue (as this machine's), over that share of a paced
    run's messages no receptor that syncs before it answers could have
    answered within 10 ms of a message's arrival.
    """
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415 (as in _delivery)

    for family in text_string_to_metric_families(metrics):
        if family.name == "soapreceptor_journal_stalled_seconds":
            return float(sum(sample.value for sample in family.samples if sample.name.endswith("_total")))
    raise ValueError("no soapreceptor_journal_stalled_seconds counter in the receptor's /metrics")


def _delivery(journal: Path) -> tuple[int, int]:
    """How many events the hook has taken, and how many wait for it (queued, in their message's row, or spooled)."""
    from soapreceptor.journal import Journal  # noqa: PLC0415 (imported when measured, as in inprocess)

    # counts() first moves what the receptor's workers spooled into the journal, as any reader does.
    reader = Journal(journal, durable=False)
    try:
        counts = reader.counts()
    finally:
        reader.close()
    return counts["delivered"], counts["pending"]


def _check_journaled(journal: Path, name: str, answered: int) -> None:
    """Every message answered 200 must be in the journal (it may hold more: answers wrk stopped waiting for)."""
    from soapreceptor.journal import Journal  # noqa: PLC0415 (imported when measured, as in inprocess)

    reader = Journal(journal, durable=False)
    try:
        reader.ingest(everything=True)
    finally:
        reader.close()
    # closing(): a connection's own with-block ends the transaction, not the connection.
    with closing(sqlite3.connect(journal)) as conn:
        stored = int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    if stored < answered:
        raise SystemExit(f"{name} answered 200 to {answered} messages but its journal holds only {stored}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _wrk_version() -> str:
    done = subprocess.run([load.wrk_binary(), "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].split(" [")[0] if (done.stdout or done.stderr) else "wrk"


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        load.wrk_binary()
    except load.LoadError as exc:
        print(f"make bench: {exc}", file=sys.stderr)
        return 2
    # Stopped (kill, a CI timeout) as by Ctrl-C: each run stops its server, and the scratch directories go.
    # Python's default for SIGTERM ends the process at once and would leave both behind.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    scratch = _scratch(Path(tempfile.gettempdir()))
    memory = _memory_scratch()
    try:
        return Bench(args, scratch, memory).run()
    except (servers.ServerError, load.LoadError) as exc:
        print(f"make bench: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if memory is not None:
            shutil.rmtree(memory, ignore_errors=True)


def _exit_on_signal(number: int, frame: object) -> None:
    print(f"make bench: stopped by {signal.Signals(number).name}", file=sys.stderr)
    raise SystemExit(128 + number)


#: Where the in-memory runs keep their journal, and the room they need there (a paced run's spool and journal).
MEMORY = Path("/dev/shm")  # noqa: S108 (only a parent: the runs get a directory of their own from mkdtemp)
MEMORY_NEEDED = 2 << 30


def _memory_scratch(parent: Path = MEMORY, needed: int = MEMORY_NEEDED) -> Path | None:
    """A fresh directory in memory for the in-memory runs, or None (and why, on stderr) where there is no room."""
    try:
        free = shutil.disk_usage(parent).free
    except OSError as exc:
        print(f"make bench: no run with the journal in memory: {parent}: {exc.strerror}", file=sys.stderr)
        return None
    if free < needed:
        print(
            f"make bench: no run with the journal in memory: {parent} has {free >> 20:,} MiB free, "
            f"under the {needed >> 20:,} MiB such a run may need",
            file=sys.stderr,
        )
        return None
    return _scratch(parent)


SCRATCH_PREFIX = "soapreceptor-bench-"


def _scratch(parent: Path) -> Path:
    """A fresh scratch directory in ``parent``, named for this process; first, those of killed runs there go.

    A run stopped by SIGTERM or Ctrl-C removes its own; one killed outright
    (SIGKILL, the OOM killer) cannot, and in /dev/shm what it leaves holds
    memory (gigabytes, after a paced run) and can leave the next run no room
    for its in-memory runs. The directory's name carries the process id, so
    that a later run can tell it from a live run's.
    """
    for path in parent.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = path.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not dispatch.process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent))


if __name__ == "__main__":
    sys.exit(main())
