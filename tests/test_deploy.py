"""deploy/ for real: nginx with TLS in front of gunicorn on a unix socket, and the systemd units."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from soapreceptor.sender import EventSpec, Sender
from tests.support import DEADLINE, KEY_2, REPO, Server, wait_for

DEPLOY = REPO / "deploy"


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


@pytest.fixture
def gunicorn_on_socket(tmp_path: Path) -> Iterator[tuple[Path, Server]]:
    """The receptor under deploy/gunicorn.conf.py, bound to a unix socket as in production."""
    sock = tmp_path / "gunicorn.sock"
    server = Server(workdir=tmp_path / "receptor", env={"SOAPRECEPTOR_BIND": f"unix:{sock}"})
    server.workdir.mkdir(parents=True)
    with server.log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py"), "soapreceptor.wsgi:application"],
            cwd=server.workdir, env=server.full_env(), stdout=log, stderr=log,
        )  # fmt: skip
    server.process = process
    try:
        wait_for(lambda: process.poll() is None and "Listening at: unix:" in server.log(), "gunicorn on its socket")
        yield sock, server
    finally:
        stop(process)


def render_site(sock: Path, port: int, cert: Path, key: Path) -> str:
    site = (DEPLOY / "nginx" / "soapreceptor.conf").read_text()
    site = site.replace("unix:/run/soapreceptor/gunicorn.sock", f"unix:{sock}")
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


@pytest.mark.parametrize("unit", ["soapreceptor.service", "soapreceptor-dispatch.service"])
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    text = (DEPLOY / "systemd" / unit).read_text()
    # The paths of an installation, pointed at this checkout's virtualenv so the executables exist.
    text = text.replace("/opt/soapreceptor/venv", str(Path(sys.executable).parent.parent))
    text = text.replace("/opt/soapreceptor/deploy", str(DEPLOY))
    (tmp_path / unit).write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr
    for hardening in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=soapreceptor",
        "User=soapreceptor",
    ):
        assert hardening in text
