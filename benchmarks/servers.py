"""Start and stop the receptors under test: each a real gunicorn on a free loopback port."""

from __future__ import annotations

import http.client
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import payloads, report

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "benchmarks" / "gunicorn_bench.py"
#: How long a server may take to start or stop on a loaded 2-core machine.
DEADLINE = 60.0
#: Valid messages a receptor has accepted when :meth:`Server.check` passes.
CHECK_ACCEPTED = 3


@dataclass(frozen=True)
class Receptor:
    """One of the receptors the harness compares."""

    name: str
    app: str
    env: dict[str, str] = field(default_factory=dict)
    journaled: bool = False
    #: Its work directory (spool and journal) in memory (tmpfs), where no sync waits for a disk.
    in_memory: bool = False


RECEPTORS: tuple[Receptor, ...] = (
    Receptor(
        report.SOAPRECEPTOR,
        "soapreceptor.wsgi:application",
        # As shipped: full verification, the shipped durable journal, the
        # embedded dispatcher handing every event to a hook that does nothing.
        {"SOAPRECEPTOR_HOOK": "benchmarks.noop_hook:discard"},
        journaled=True,
    ),
    Receptor(report.NAIVE, "benchmarks.naive_spyne:application", {"SOAPRECEPTOR_DISPATCHER": "off"}),
    Receptor(report.BARE, "benchmarks.bare:application", {"SOAPRECEPTOR_DISPATCHER": "off"}),
)

#: soapreceptor with one part taken away, measured beside the three to show where its time goes.
_NO_DISPATCHER = replace(
    RECEPTORS[0],
    name=report.NO_DISPATCHER,
    env={**RECEPTORS[0].env, "SOAPRECEPTOR_DISPATCHER": "off"},
)
DIAGNOSTICS: tuple[Receptor, ...] = (
    # Its workers alone: the journal write as shipped, no dispatcher competing for the CPUs.
    _NO_DISPATCHER,
    # Nor the journal write: everything else on the Notify path (benchmarks/no_journal.py).
    replace(_NO_DISPATCHER, name=report.NO_JOURNAL, app="benchmarks.no_journal:application", journaled=False),
)


#: soapreceptor as shipped, but with its spool and journal in memory (tmpfs): every step of its path runs, the
#: syncs included, but none waits for a disk. Paced only: the code's own latency, beside the disk's.
IN_MEMORY = replace(RECEPTORS[0], name=report.IN_MEMORY, in_memory=True)


class ServerError(RuntimeError):
    """A receptor did not start, or did not behave as a receptor must."""


@dataclass
class Server:
    """A running gunicorn serving ``receptor`` with ``workers`` workers of ``worker_class``."""

    receptor: Receptor
    workdir: Path
    workers: int
    worker_class: str
    threads: int = 1
    #: The keep-alive connections the load will hold open: each worker takes at most its share.
    connections: int = 0
    process: subprocess.Popen[bytes] | None = None
    host: str = ""
    port: int = 0

    @property
    def journal(self) -> Path:
        return self.workdir / "journal.db"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    def start(self) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SOAPRECEPTOR_", "BENCH_"))}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "SOAPRECEPTOR_SECRET": payloads.SECRET,
                "SOAPRECEPTOR_JOURNAL": str(self.journal),
                "SOAPRECEPTOR_BIND": "127.0.0.1:0",
                "BENCH_WORKERS": str(self.workers),
                "BENCH_WORKER_CLASS": self.worker_class,
                "BENCH_THREADS": str(self.threads),
                "BENCH_WORKER_CONNECTIONS": str(self.worker_connections),
            }
        )
        env.update(self.receptor.env)
        command = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), self.receptor.app]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=self.workdir, env=env, stdout=log, stderr=log)
        address = _poll(self._listening, f"{self.receptor.name} to listen")
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        _poll(lambda: len(self.worker_pids()) == self.workers, f"{self.receptor.name}'s workers to start")
        self.check()
        return self

    @property
    def worker_connections(self) -> int:
        """Each worker's share of the load's connections (gunicorn's default, 1000, when not told)."""
        return math.ceil(self.connections / self.workers) if self.connections else 1000

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def check(self) -> None:
        """A receptor under test must accept a valid message and refuse a forged one, or it is not compared."""
        stamp = payloads.timestamp()
        good = payloads.message(1, 999_999_999_999, stamp=stamp)
        forged = payloads.message(1, 999_999_999_998, stamp=stamp, secret="not-the-key")
        status = _poll(lambda: self._post(good), f"{self.receptor.name} to accept a valid message")
        if status != 200:
            raise ServerError(f"{self.receptor.name} answered {status} to a valid signed Notify:\n{self.log()}")
        status = self._post(forged)
        if status in (None, 200):
            raise ServerError(f"{self.receptor.name} did not refuse a Notify signed with the wrong key ({status})")
        if not self._keeps_alive():
            raise ServerError(
                f"{self.receptor.name} closed the connection after an answer: the load would open a new one "
                "for every request, not measure keep-alive traffic"
            )

    def metrics(self) -> str:
        """The receptor's ``/metrics`` page (Prometheus' text format, every worker's counts added up)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=DEADLINE)
        try:
            connection.request("GET", "/metrics", headers={"Connection": "close"})
            answer = connection.getresponse()
            text = answer.read().decode()
        finally:
            connection.close()
        if answer.status != 200:
            raise RuntimeError(f"{self.receptor.name}: GET /metrics answered {answer.status}: {text[:200]}")
        return text

    def _post(self, body: bytes) -> int | None:
        answers = self._exchange([body])
        return answers[0][0] if answers else None

    def _keeps_alive(self) -> bool:
        """Whether two messages in a row are answered on one HTTP/1.1 connection, which stays open."""
        stamp = payloads.timestamp()
        answers = self._exchange(
            [payloads.message(1, serial, stamp=stamp) for serial in (999_999_999_997, 999_999_999_996)]
        )
        return answers is not None and all(status == 200 and not closing for status, closing in answers)

    def _exchange(self, bodies: list[bytes]) -> list[tuple[int, bool]] | None:
        """POST ``bodies`` one after another on one connection: each answer's status and whether it closes it."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=DEADLINE)
        try:
            answers = []
            for body in bodies:
                connection.request("POST", "/", body=body, headers={"Content-Type": "text/xml; charset=utf-8"})
                response = connection.getresponse()
                response.read()
                answers.append((response.status, response.will_close))
            return answers
        except OSError:
            return None
        finally:
            connection.close()

    def _listening(self) -> str | None:
        self._check_alive()
        match = re.search(r"Listening at: http://([\d.]+:\d+)", self.log())
        return match.group(1) if match else None

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise ServerError(f"{self.receptor.name} exited with {self.process.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def children(self) -> list[int]:
        assert self.process is not None
        return _children(self.process.pid)

    def worker_pids(self) -> list[int]:
        """The gunicorn workers (not the embedded dispatcher, which is also the master's child)."""
        return [pid for pid in self.children() if b"dispatch" not in _cmdline(pid)]

    def cpu_seconds(self) -> float:
        """CPU time (user and system) used so far by the server's live processes: master, workers, dispatcher."""
        assert self.process is not None
        found, todo = 0.0, [self.process.pid]
        while todo:
            pid = todo.pop()
            found += _cpu_seconds(pid)
            todo += _children(pid)
        return found

    def peak_rss_kib(self) -> int:
        """The largest peak resident set (VmHWM) among the workers."""
        return max((_vm_hwm(pid) for pid in self.worker_pids()), default=0)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of proc(5) (counted from 1, the two before ")" included): in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _vm_hwm(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _poll(probe: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise ServerError(f"gave up waiting for {what} after {deadline:.0f} s")
        time.sleep(0.05)
