"""Test helpers: MTurk-shaped messages, a real gunicorn on loopback, raw HTTP, the recorded hook's events."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from soapreceptor import Event, fixtures
from soapreceptor.wsgi import ReceptorApp

REPO = Path(__file__).resolve().parent.parent

# protocol.md section 4's test vectors.
KEY_1 = "zzT2CTVVfFeXw/OrwezR8inI5WwiO/mlfGEXxvP1"
KEY_2 = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
VECTOR_TIMESTAMP = "2006-05-23T23:22:30Z"
VECTOR_TIMESTAMP_MS = "2006-05-23T23:22:30.000Z"
VECTORS = [
    (KEY_1, VECTOR_TIMESTAMP, "FNJJstGUL4jPSEZmY3zS6Cl+gNw="),
    (KEY_2, VECTOR_TIMESTAMP, "SCKBAzx2/Kt3aYqRcDjBAqOSm+o="),
    (KEY_2, VECTOR_TIMESTAMP_MS, "sQnGjLuFGf+BAIcCne9E8xXCk6s="),
]

# Generous for a loaded 2-core machine; every wait polls and returns as soon as it can.
DEADLINE = 60.0

ACCEPTED_EVENT = {
    "EventType": "AssignmentAccepted",
    "EventTime": "2006-04-21T18:55:23Z",
    "HITTypeId": "KDSFO4455LKDAF3",
    "HITId": "KDSFO4455LKDAF3",
    "AssignmentId": "KDSFO4455LKDAF3KDSFO4455LKDAF3",
}

AXIS_HEADERS = {
    "Content-Type": "text/xml; charset=utf-8",
    "Accept": "application/soap+xml, application/dime, multipart/related, text/*",
    "User-Agent": "Jakarta Commons-HttpClient/2.0final",
    "SOAPAction": '"http://soap.amazon.com"',
}


def amazon_envelope(
    version: str = "2006-05-05",
    *,
    signature: str | None = "SCKBAzx2/Kt3aYqRcDjBAqOSm+o=",
    timestamp: str = VECTOR_TIMESTAMP,
    declared_version: str | None = None,
    events: Iterable[Mapping[str, str]] = (ACCEPTED_EVENT,),
    header: str | None = None,
) -> bytes:
    """Amazon's documented Notify (protocol.md section 3), by default KEY_2's test vector message."""
    return fixtures.amazon_envelope(
        version,
        signature=signature,
        timestamp=timestamp,
        declared_version=declared_version,
        events=events,
        header=header,
    )


def wsdl_url(version: str) -> str:
    return (
        f"http://mechanicalturk.amazonaws.com/AWSMechanicalTurk/{version}/AWSMechanicalTurkRequesterNotification.wsdl"
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def faultcode(self) -> str | None:
        match = re.search(rb"<faultcode>(?:[^:<]*:)?([^<]*)</faultcode>", self.body)
        return match.group(1).decode() if match else None


def address(url: str) -> tuple[str, int]:
    """The host and port of a server's ``http://host:port/`` URL, for a socket of one's own."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"no host and port in {url!r}")
    return parts.hostname, parts.port


def post(url: str, body: bytes, headers: Mapping[str, str] | None = None, method: str = "POST") -> Answer:
    """Send exactly ``body`` with exactly ``headers`` (no library rewriting them)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=DEADLINE)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection.request(method, path, body=body, headers=dict(AXIS_HEADERS if headers is None else headers))
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def exchange(url: str, data: bytes, half_close: bool = False) -> Answer:
    """Send raw request bytes and read the answer, stopping early if the receptor answers first.

    A receptor refuses an oversized body without reading it, answers and
    closes; a client that insisted on sending all of it would see a broken
    pipe instead of the answer.
    """
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        try:
            for start in range(0, len(data), 65536):
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer is already here
                sock.sendall(data[start : start + 65536])
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_answer(sock)


def read_answer(sock: socket.socket) -> Answer:
    """The HTTP answer on ``sock``, read to the end (the server closes the connection after it)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body)


def wait_for(predicate: Any, what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(0.05)


# --- processes, as /proc shows them (no psutil; /proc/<pid>/task/*/children may be missing) ----------


@dataclass(frozen=True)
class Proc:
    """A process seen at one moment; its start time tells it apart from a later process with the same pid."""

    pid: int
    parent: int
    started: int
    command: str

    @property
    def is_dispatcher(self) -> bool:
        return "soapreceptor.cli" in self.command and "dispatch" in self.command

    def alive(self) -> bool:
        """Still running (a zombie waiting for a reaper has exited: it counts as gone)."""
        stat = _stat(self.pid)
        return stat is not None and stat[0] not in "ZX" and stat[2] == self.started


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of ``pid``, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_tree(root: int) -> list[Proc]:
    """``root`` and every live descendant of it, root first."""
    stats = {int(entry.name): _stat(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit()}
    live = {pid: stat for pid, stat in stats.items() if stat is not None and stat[0] not in "ZX"}
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop(0)
        if pid in live:
            _state, parent, started = live[pid]
            tree.append(Proc(pid, parent, started, _command(pid)))
            frontier += [child for child, stat in live.items() if stat[1] == pid]
    return tree


def wait_gone(procs: Iterable[Proc], what: str) -> None:
    """Wait until none of ``procs`` runs any more; fail naming the survivors."""
    procs = list(procs)
    try:
        wait_for(lambda: not any(proc.alive() for proc in procs), what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still running: {[p for p in procs if p.alive()]}") from None


def kill_all(procs: Iterable[Proc]) -> None:
    """SIGKILL every one of ``procs`` that is still the same running process."""
    for proc in procs:
        if proc.alive():
            with suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


@dataclass
class Server:
    """A real gunicorn serving ``soapreceptor.wsgi:application`` on a free loopback port."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 2
    command: list[str] | None = None
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def events_file(self) -> Path:
        return self.workdir / "events.jsonl"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    def full_env(self) -> dict[str, str]:
        """The server's environment; makes the directory it is given as TMPDIR (tempfile would fall back to /tmp)."""
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOAPRECEPTOR_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "SOAPRECEPTOR_HOOK": "tests.recording_hook:record",
                "SOAPRECEPTOR_TEST_EVENTS": str(self.events_file),
                "SOAPRECEPTOR_SECRET": KEY_2,
                "SOAPRECEPTOR_BIND": "127.0.0.1:0",
                "SOAPRECEPTOR_WORKERS": str(self.workers),
                # Its temporary files (the metrics directory among them) in the test's own directory.
                "TMPDIR": str(self.workdir / "tmp"),
            }
        )
        env.update(self.env)
        return env

    def start(self) -> Server:
        command = self.command or [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(REPO / "deploy" / "gunicorn.conf.py"),
            "soapreceptor.wsgi:application",
        ]
        env = self.full_env()
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=self.workdir, env=env, stdout=log, stderr=log)
        listening = wait_for(self._listening, "gunicorn to listen")
        self.url = f"http://{listening}/"
        wait_for(self._healthy, "the receptor to answer /healthz")
        return self

    def _listening(self) -> str | None:
        self._check_alive()
        match = re.search(r"Listening at: http://([\d.]+:\d+)", self.log())
        return match.group(1) if match else None

    def _healthy(self) -> bool:
        self._check_alive()
        try:
            # Asking for the connection to be closed: a kept-alive probe that its client closes later
            # reaches a worker as one more connection wanting a thread, in the middle of a test.
            probe = post(self.url + "healthz", b"", headers={"Connection": "close"}, method="GET")
            return probe.status == 200
        except OSError:
            return False

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        """What the recording hook saw, in order."""
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines() if line.strip()]

    def wait_for_events(self, count: int) -> list[dict[str, Any]]:
        return list(wait_for(lambda: len(self.events()) >= count and self.events(), f"{count} events at the hook"))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=DEADLINE)


@dataclass
class Reply:
    """A WSGI answer: status line, headers, body."""

    status: str
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> int:
        return int(self.status.split()[0])

    @property
    def faultcode(self) -> str | None:
        found = etree.fromstring(self.body).findtext(".//faultcode")
        return found.partition(":")[2] if found else None

    @property
    def faultstring(self) -> str:
        return etree.fromstring(self.body).findtext(".//faultstring") or ""


@dataclass
class Harness:
    """Calls a receptor's WSGI app in process, as a WSGI server would."""

    app: ReceptorApp

    @property
    def seen(self) -> list[Event]:
        """The events the journal holds for the hook (pending delivery)."""
        return [stored.event for stored in self.app.receptor.journal.events("pending")]

    def request(
        self,
        method: str = "POST",
        body: bytes = b"",
        path: str = "/",
        query: str = "",
        content_type: str = "text/xml; charset=utf-8",
        **headers: str,
    ) -> Reply:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "8080",
            "wsgi.url_scheme": "http",
        }
        environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started.append((status, response_headers))
            return lambda data: None

        body_out = b"".join(self.app(environ, start_response))
        status, response_headers = started[-1]
        return Reply(status, dict(response_headers), body_out)

    def notify(self, body: bytes, soap_action: str = '"http://soap.amazon.com"') -> Reply:
        return self.request(body=body, SOAPACTION=soap_action)
