"""deploy/ for real: nginx with TLS in front of gunicorn on a unix socket, and the systemd units."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from soapreceptor.sender import EventSpec, Sender
from tests.support import (
    ACCEPTED_EVENT,
    AXIS_HEADERS,
    DEADLINE,
    KEY_2,
    REPO,
    Server,
    amazon_envelope,
    read_answer,
    wait_for,
)

DEPLOY = REPO / "deploy"
APP = "soapreceptor.wsgi:application"


def need(tool: str) -> str:
    """The tool's path; CI must have it (.ci/run installs it), elsewhere the test is skipped."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed; .ci/run should have installed it")
        pytest.skip(f"{tool} is not installed (apt-get install -y {tool})")
    return path


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=DEADLINE,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# What systemd does for deploy/systemd/soapreceptor.socket: the listening socket is its own,
# and each process it starts gets it as descriptor 3, with LISTEN_FDS=1 and LISTEN_PID set
# to that process (sd_listen_fds(3)); gunicorn then serves on it, whatever it is told to bind.
_ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
if fd != 3:
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def listening_socket(path: Path) -> socket.socket:
    """A unix socket listening at ``path``, as systemd makes it for soapreceptor.socket."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    return listener


def start_activated(server: Server, listener: socket.socket, log_name: str) -> subprocess.Popen[bytes]:
    """gunicorn under deploy/gunicorn.conf.py, started as systemd starts soapreceptor.service; listening on return."""
    fd = listener.fileno()
    log = server.workdir / log_name
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _ACTIVATE, str(fd), "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py"), APP],
            cwd=server.workdir, env=server.full_env(), stdout=out, stderr=out, pass_fds=(fd,),
        )  # fmt: skip
    try:
        wait_for(
            lambda: (
                f"Listening at: unix:{listener.getsockname()}" in log.read_text(errors="replace")
                or process.poll() is not None
            ),
            "gunicorn on the socket passed to it",
        )
        assert process.poll() is None, log.read_text(errors="replace")
    except BaseException:
        stop(process)
        raise
    return process


@pytest.fixture
def gunicorn_on_socket(tmp_path: Path) -> Iterator[tuple[Path, Server]]:
    """The receptor as in production: deploy/gunicorn.conf.py on a unix socket that systemd holds and passes in."""
    sock = tmp_path / "soapreceptor.sock"
    server = Server(workdir=tmp_path / "receptor")
    server.workdir.mkdir(parents=True)
    with listening_socket(sock) as listener:
        server.process = start_activated(server, listener, "server.log")
        try:
            yield sock, server
        finally:
            stop(server.process)


def render_site(sock: Path, port: int, cert: Path, key: Path) -> str:
    site = (DEPLOY / "nginx" / "soapreceptor.conf").read_text()
    site = site.replace("unix:/run/soapreceptor.sock", f"unix:{sock}")
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;").replace("listen [::]:443 ssl;", "")
    site = site.replace("/etc/letsencrypt/live/mturk.example.org/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/mturk.example.org/privkey.pem", str(key))
    return site.replace("server_name mturk.example.org;", "server_name 127.0.0.1;")


def test_signed_notify_through_nginx_tls_reaches_the_hook(
    tmp_path: Path, certificate: tuple[Path, Path], gunicorn_on_socket: tuple[Path, Server]
) -> None:
    nginx = need("nginx")
    sock, server = gunicorn_on_socket
    cert, key = certificate
    port = free_port()
    (tmp_path / "site.conf").write_text(render_site(sock, port, cert, key))
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"""user root;
worker_processes 1;
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log warn;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/site.conf;
}}
"""
    )
    check = subprocess.run(
        [nginx, "-t", "-c", str(tmp_path / "nginx.conf")], check=False, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf")], stderr=subprocess.DEVNULL)
    try:
        url = f"https://127.0.0.1:{port}/"
        session = requests.Session()
        # requests lets REQUESTS_CA_BUNDLE from the environment override a
        # session's own verify; this session trusts exactly the test's certificate.
        session.trust_env = False
        session.verify = str(cert)

        def up() -> bool:
            try:
                return session.get(url + "healthz", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, "nginx to proxy to the receptor")
        result = Sender(url, KEY_2, session=session).send([EventSpec("AssignmentSubmitted", "T", "H", "via-nginx")])
        assert result.accepted, result
        (event,) = server.wait_for_events(1)
        assert event["assignment_id"] == "via-nginx"
        # nginx refuses what is over the receptor's cap before gunicorn sees it.
        big = session.post(url, data=b"x" * (300 * 1024), headers={"Content-Type": "text/xml"}, timeout=DEADLINE)
        assert big.status_code == 413
        # Plain HTTP is not served on the TLS port.
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=DEADLINE).status_code == 400
    finally:
        stop(process)


def test_nginx_cap_matches_the_receptors() -> None:
    site = (DEPLOY / "nginx" / "soapreceptor.conf").read_text()
    from soapreceptor.gate import DEFAULT_MAX_BODY  # noqa: PLC0415

    assert re.search(rf"client_max_body_size {DEFAULT_MAX_BODY // 1024}k;", site)


def test_nginx_keeps_no_connection_to_the_receptor_between_calls() -> None:
    """A kept connection that gunicorn closes as nginx sends a POST on it is a 502, which MTurk never sends again."""
    site = (DEPLOY / "nginx" / "soapreceptor.conf").read_text()
    block = re.search(r"^upstream soapreceptor \{(.*?)^\}", site, re.MULTILINE | re.DOTALL)
    assert block is not None
    directives = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert "server unix:/run/soapreceptor.sock fail_timeout=0;" in directives
    # keepalive, or its keepalive_timeout and keepalive_requests: upstream keep-alive in any form.
    assert [d for d in directives if re.match(r"keepalive(_\w+)?\s", d)] == []


UNITS = ("soapreceptor.socket", "soapreceptor.service", "soapreceptor-dispatch.service")


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    for name in UNITS:  # side by side, as installed: the service needs its socket
        text = (DEPLOY / "systemd" / name).read_text()
        # The paths of an installation, pointed at this checkout's virtualenv so the executables exist.
        text = text.replace("/opt/soapreceptor/venv", str(Path(sys.executable).parent.parent))
        text = text.replace("/opt/soapreceptor/deploy", str(DEPLOY))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr
    if unit.endswith(".service"):
        text = (tmp_path / unit).read_text()
        for hardening in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "StateDirectory=soapreceptor",
            "User=soapreceptor",
        ):
            assert hardening in text


def test_the_service_takes_its_socket_from_systemd_and_nginx_reaches_it_there() -> None:
    service = (DEPLOY / "systemd" / "soapreceptor.service").read_text()
    socket_unit = (DEPLOY / "systemd" / "soapreceptor.socket").read_text()
    site = (DEPLOY / "nginx" / "soapreceptor.conf").read_text()
    (path,) = re.findall(r"^ListenStream=(\S+)$", socket_unit, re.MULTILINE)
    assert re.search(rf"^\s*server unix:{re.escape(path)} ", site, re.MULTILINE), "nginx forwards to that socket"
    assert "Requires=soapreceptor.socket" in service
    assert "SOAPRECEPTOR_BIND" not in service, "a bind of its own would be a second socket, refused while restarting"
    assert re.search(r"^SocketGroup=www-data$", socket_unit, re.MULTILINE), "nginx's group may connect"


def _call(path: Path, assignment: str) -> socket.socket:
    """Send a signed Notify on the receptor's socket (Connection: close); the connection, to read the answer from."""
    body = amazon_envelope(events=[{**ACCEPTED_EVENT, "AssignmentId": assignment}])
    headers = {**AXIS_HEADERS, "Host": "mturk.example.org", "Content-Length": str(len(body)), "Connection": "close"}
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(DEADLINE)
    client.connect(str(path))
    head = "POST / HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    client.sendall(head.encode() + body)
    return client


def test_a_call_made_while_the_receptor_restarts_waits_in_the_socket_and_is_answered(tmp_path: Path) -> None:
    """With systemd holding the socket, a restart (new code, a crash) refuses no call: MTurk would not send it again.

    The call made while no gunicorn runs waits in the socket's queue; the
    next gunicorn answers it, and its event reaches the hook.
    """
    sock = tmp_path / "soapreceptor.sock"
    server = Server(workdir=tmp_path / "receptor", env={"SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "0"})
    server.workdir.mkdir(parents=True)
    with listening_socket(sock) as listener:
        first = start_activated(server, listener, "first.log")
        try:
            with _call(sock, "BEFORE") as client:
                answer = read_answer(client)
        finally:
            stop(first)
        assert (answer.status, b"NotifyResponse" in answer.body) == (200, True), answer.body
        assert sock.exists(), "gunicorn left the socket that is not its own where it was"

        waiting = _call(sock, "MEANWHILE")  # nobody serves: the kernel queues it
        second = start_activated(server, listener, "second.log")
        try:
            with waiting:
                answer = read_answer(waiting)
            assert (answer.status, b"NotifyResponse" in answer.body) == (200, True), answer.body
            events = server.wait_for_events(2)
        finally:
            stop(second)
    assert [event["assignment_id"] for event in events] == ["BEFORE", "MEANWHILE"]
