"""soapreceptor's gunicorn worker (soapreceptor.worker), in a real gunicorn on loopback.

A tiny WSGI application (tests/worker_app.py) answers each request with the
number of times so far a thread gave a kept-alive connection back to the
main thread. Most tests use a worker that waits a minute for a connection's
next request rather than the shipped millisecond, so that what they show does
not depend on how fast this machine runs the client.
"""

from __future__ import annotations

import http.client
import importlib
import importlib.util
import ipaddress
import itertools
import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from gunicorn.config import Config

from soapreceptor.worker import MAX_SKIP, Lingering, SettledConfig, http_parser
from tests.support import DEADLINE, Server, address, wait_for

StartServer = Callable[[str], Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start gunicorn with one worker of the given class (tests/worker_app.py) and one thread; stopped at the end."""
    started: list[Server] = []

    def start(worker_class: str) -> Server:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--worker-class",
            f"tests.worker_app.{worker_class}",
            "--workers",
            "1",
            "--threads",
            "1",
            "--keep-alive",
            "300",
            "--bind",
            "127.0.0.1:0",
            "tests.worker_app:application",
        ]
        server = Server(workdir=tmp_path / f"server{len(started)}", workers=1, command=command)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def _connect(server: Server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*address(server.url), timeout=DEADLINE)


def _handoffs(connection: http.client.HTTPConnection) -> int:
    """Send a request on ``connection`` (kept alive) and read the hand-offs the answer reports."""
    connection.request("POST", "/", body=b"<Notify/>")
    answer = connection.getresponse()
    assert answer.status == 200
    assert not answer.will_close
    return int(json.loads(answer.read())["handoffs"])


@pytest.mark.parametrize(
    ("worker_class", "handoffs"),
    [
        ("PatientWorker", 0),  # soapreceptor's: the thread that answered serves the next request too
        ("CountingGthreadWorker", 19),  # gthread: every answer hands the connection back to the main thread
    ],
)
def test_a_thread_serves_its_connections_next_request_itself(
    start_server: StartServer, worker_class: str, handoffs: int
) -> None:
    connection = _connect(start_server(worker_class))
    try:
        seen = [_handoffs(connection) for _ in range(20)]
    finally:
        connection.close()
    assert seen[-1] - seen[0] == handoffs


def test_pipelined_requests_are_both_answered(start_server: StartServer) -> None:
    # Both requests are on the connection before the first is answered: the
    # second is served at once, read ahead or not, with the shipped linger.
    server = start_server("CountingWorker")
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n<Notify/>"
    with socket.create_connection(address(server.url), timeout=DEADLINE) as sock:
        sock.sendall(request * 2)
        with sock.makefile("rb") as answers:
            first, second = _read_answer(answers), _read_answer(answers)
    assert second == first


def _read_answer(answers: BinaryIO) -> int:
    status = answers.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    length = 0
    while (line := answers.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return int(json.loads(answers.read(length))["handoffs"])


def test_a_busy_client_does_not_keep_the_only_thread_from_another(start_server: StartServer) -> None:
    # The worker has one thread, and it would wait a minute for the busy
    # client's next request, which always comes at once: only seeing another
    # connection waiting makes it let the busy one go.
    server = start_server("PatientWorker")
    stop, served = threading.Event(), []

    def busy() -> None:
        connection = _connect(server)
        try:
            while not stop.is_set():
                served.append(_handoffs(connection))
        finally:
            connection.close()

    client = threading.Thread(target=busy)
    client.start()
    try:
        wait_for(lambda: len(served) >= 3, "the busy client's first answers")
        other = _connect(server)
        try:
            _handoffs(other)  # times out (DEADLINE) if the busy connection keeps the thread
        finally:
            other.close()
    finally:
        stop.set()
        client.join(DEADLINE)
    assert not client.is_alive()


def test_an_idle_connection_holds_no_thread(start_server: StartServer) -> None:
    # The shipped worker, one thread: a kept-alive connection that sends nothing
    # goes back to the main thread after the linger, and the thread serves others.
    server = start_server("CountingWorker")
    idle, other = _connect(server), _connect(server)
    try:
        _handoffs(idle)
        _handoffs(other)
        _handoffs(idle)  # and the idle one is still served, from the poller
    finally:
        idle.close()
        other.close()


def test_the_server_stops_with_a_kept_alive_connection_open(start_server: StartServer) -> None:
    server = start_server("CountingWorker")
    connection = _connect(server)
    try:
        _handoffs(connection)
        server.stop()
        assert server.process is not None
        assert server.process.returncode == 0, server.log()
    finally:
        connection.close()


def test_lingering_waits_on_a_busy_connection_every_time() -> None:
    lingering = Lingering()
    for _ in range(100):
        assert lingering.wait_now()
        lingering.waited(answered=True)


def test_lingering_waits_less_and_less_often_on_a_connection_that_pauses() -> None:
    lingering = Lingering()
    waits_at = []
    for answer in range(300):
        if lingering.wait_now():
            waits_at.append(answer)
            lingering.waited(answered=False)
    gaps = [later - earlier for earlier, later in itertools.pairwise(waits_at)]
    assert gaps[:8] == [2, 3, 5, 9, 17, 33, 65, 65]  # 1, 2, 4 ... answers skipped, then MAX_SKIP
    assert set(gaps[6:]) == {MAX_SKIP + 1}


def test_lingering_an_answered_wait_starts_the_count_again() -> None:
    lingering = Lingering()
    for _ in range(3):  # three unanswered waits: the next comes after 8 answers without one
        while not lingering.wait_now():
            pass
        lingering.waited(answered=False)
    skipped = 0
    while not lingering.wait_now():
        skipped += 1
    assert skipped == 4
    lingering.waited(answered=True)  # the connection is busy again
    assert lingering.wait_now()
    lingering.waited(answered=False)
    assert not lingering.wait_now()  # one answer without a wait, as after a first unanswered one
    assert lingering.wait_now()


def test_settled_config_reads_what_gunicorns_config_holds() -> None:
    config = Config()
    config.set("keepalive", 300)
    config.set("forwarded_allow_ips", "10.0.0.0/8")
    settled = SettledConfig(config)
    assert settled.keepalive == 300
    assert settled.limit_request_line == config.limit_request_line  # a default
    assert not settled.is_ssl  # a property of Config
    assert settled.forwarded_allow_networks() == [ipaddress.ip_network("10.0.0.0/8")]  # a method
    with pytest.raises(AttributeError, match="No configuration setting for: keep_alive"):
        _ = settled.keep_alive


def test_settled_config_looks_each_setting_up_once() -> None:
    config = Config()
    config.set("keepalive", 300)
    settled = SettledConfig(config)
    assert settled.keepalive == 300
    config.set("keepalive", 7)  # never happens to a worker's settings: shows the first read is kept
    assert settled.keepalive == 300
    assert vars(settled)["keepalive"] == 300  # a plain attribute now, no lookup through Config


def test_settled_config_cannot_be_changed() -> None:
    settled = SettledConfig(Config())
    with pytest.raises(AttributeError, match="read-only"):
        settled.keepalive = 7


def test_http_parser_names_gunicorns_c_parser_where_it_is_installed() -> None:
    """``auto`` (gunicorn's default) takes gunicorn_h1c, the fast extra, wherever it imports."""
    try:
        h1c = importlib.import_module("gunicorn_h1c")
    except ImportError:
        assert http_parser(Config()) == "its Python HTTP parser"
    else:
        assert http_parser(Config()) == f"its C HTTP parser (gunicorn_h1c {h1c.__version__})"


def test_http_parser_follows_gunicorns_setting() -> None:
    python = Config()
    python.set("http_parser", "python")
    assert http_parser(python) == "its Python HTTP parser"
    fast = Config()
    fast.set("http_parser", "fast")
    if importlib.util.find_spec("gunicorn_h1c") is None:
        assert http_parser(fast).startswith("no HTTP parser: gunicorn_h1c not installed")
    else:
        assert http_parser(fast).startswith("its C HTTP parser (gunicorn_h1c ")
