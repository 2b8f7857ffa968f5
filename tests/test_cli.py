"""The ``soapreceptor`` console script, run as a subprocess: send, events, serve and wsdl, and their exit statuses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from soapreceptor.journal import Arrival, Journal
from soapreceptor.wire import parse_notify
from tests import support
from tests.support import Server, amazon_envelope, post

# The console script pip installed next to the interpreter running the tests.
SCRIPT = Path(sys.executable).parent / "soapreceptor"
VERSIONS = ("2006-05-05", "2006-08-23", "2006-10-31")
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"

ServerFactory = Callable[..., Server]


def cli_env(**settings: str) -> dict[str, str]:
    """The test's environment without any SOAPRECEPTOR_* setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOAPRECEPTOR_")}
    return {**env, **settings}


def soapreceptor(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script to completion (bounded by support.DEADLINE)."""
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: install the project with pip install -e ."
    return subprocess.run(
        [str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=support.DEADLINE, check=False
    )


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# --- send -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_send_delivers_its_events(server_factory: ServerFactory, tmp_path: Path, version: str) -> None:
    """``send --event ... --version V`` signs with SOAPRECEPTOR_SECRET, exits 0, says accepted; both events arrive."""
    server = server_factory({})

    result = soapreceptor(
        "send",
        "--url",
        server.url,
        "--event",
        "AssignmentAccepted:T:H:A",
        "--event",
        "Ping",
        "--version",
        version,
        env=cli_env(SOAPRECEPTOR_SECRET=support.KEY_2),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "accepted" in result.stdout
    assert f"version {version}" in result.stdout
    seen = server.wait_for_events(2)
    assert [(r["event_type"], r["hit_type_id"], r["hit_id"], r["assignment_id"], r["version"]) for r in seen] == [
        ("AssignmentAccepted", "T", "H", "A", version),
        ("Ping", None, None, None, version),
    ]


def test_send_with_the_wrong_secret_exits_1_with_the_faultcode(server_factory: ServerFactory, tmp_path: Path) -> None:
    """A refusal is exit status 1 and the faultcode on stdout; --secret overrides SOAPRECEPTOR_SECRET."""
    server = server_factory({})

    result = soapreceptor(
        "send",
        "--url",
        server.url,
        "--event",
        "Ping",
        "--secret",
        support.KEY_1,
        env=cli_env(SOAPRECEPTOR_SECRET=support.KEY_2),
        cwd=tmp_path,
    )

    assert result.returncode == 1, result.stderr
    assert "Client.SignatureMismatch" in result.stdout
    # The hook is called in arrival order: once a later, accepted event is through, the refused one never will be.
    later = ("send", "--url", server.url, "--event", "HITExpired:T:LATER")
    assert soapreceptor(*later, env=cli_env(SOAPRECEPTOR_SECRET=support.KEY_2), cwd=tmp_path).returncode == 0
    assert [event["hit_id"] for event in server.wait_for_events(1)] == ["LATER"]


def test_send_to_a_closed_port_exits_3_without_a_traceback(closed_port: int, tmp_path: Path) -> None:
    """No receptor listening: exit status 3 and one ``soapreceptor:`` line naming the URL."""
    url = f"http://127.0.0.1:{closed_port}/"

    result = soapreceptor(
        "send", "--url", url, "--event", "Ping", env=cli_env(SOAPRECEPTOR_SECRET=support.KEY_2), cwd=tmp_path
    )

    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(f"soapreceptor: could not post to {url}")
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ("--event", "A:B"),
            {"SOAPRECEPTOR_SECRET": support.KEY_2},
            "soapreceptor: --event 'A:B' is not TYPE, TYPE:HITTypeId:HITId or TYPE:HITTypeId:HITId:AssignmentId",
            id="bad-event",
        ),
        pytest.param(
            ("--event", "Ping"),
            {},
            "soapreceptor: send needs a signing key: pass --secret or set SOAPRECEPTOR_SECRET"
            " or SOAPRECEPTOR_SECRET_FILE",
            id="no-secret",
        ),
        pytest.param(
            ("--event", "Ping", "--timeout", "0"),
            {"SOAPRECEPTOR_SECRET": support.KEY_2},
            "soapreceptor: --timeout must be a positive number of seconds, not 0",
            id="no-time-to-answer",
        ),
        pytest.param(
            ("--event", "Ping", "--timeout", "-1.5"),
            {"SOAPRECEPTOR_SECRET": support.KEY_2},
            "soapreceptor: --timeout must be a positive number of seconds, not -1.5",
            id="negative-timeout",
        ),
        # A Timestamp in the future is not stale (it was sent dated 5 s ahead, without a word).
        pytest.param(
            ("--event", "Ping", "--stale", "-5"),
            {"SOAPRECEPTOR_SECRET": support.KEY_2},
            "soapreceptor: --stale must be 0 or more seconds in the past, not -5",
            id="stale-in-the-future",
        ),
        pytest.param(
            ("--event", "Ping", "--stale", "nan"),
            {"SOAPRECEPTOR_SECRET": support.KEY_2},
            "soapreceptor: --stale must be 0 or more seconds in the past, not nan",
            id="stale-not-a-number",
        ),
        # Past what a datetime holds: it was a traceback (OverflowError).
        pytest.param(
            ("--event", "Ping", "--stale", "1e12"),
            {"SOAPRECEPTOR_SECRET": support.KEY_2},
            "soapreceptor: --stale 1e+12 reaches back before the year 1",
            id="stale-before-year-1",
        ),
    ],
)
def test_send_usage_errors_exit_2(
    closed_port: int, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    """A malformed ``--event``, no signing key or no time to answer is exit status 2 with one clear line, before any
    network."""
    result = soapreceptor("send", "--url", f"http://127.0.0.1:{closed_port}/", *args, env=cli_env(**env), cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message
    assert result.stdout == ""


def test_send_names_an_event_type_mturk_is_not_known_to_send_and_sends_it(closed_port: int, tmp_path: Path) -> None:
    """The receptor accepts unknown types (none may be lost), so send may send one; but a misspelt type is said."""
    result = soapreceptor(
        "send", "--url", f"http://127.0.0.1:{closed_port}/", "--dry-run",
        "--event", "AssignmentAccept:T:H:A", "--event", "Bogus", "--event", "HITExpired:T:H",
        env=cli_env(SOAPRECEPTOR_SECRET=support.KEY_2), cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    notices = result.stderr.splitlines()
    assert notices[0] == (
        "soapreceptor: --event type 'AssignmentAccept' is not one MTurk is known to send"
        " (did you mean AssignmentAccepted?); sending it as given"
    )
    assert notices[1].startswith("soapreceptor: --event type 'Bogus' is not one MTurk is known to send (AssignmentAcc")
    assert notices[1].endswith(", Ping); sending it as given")
    assert len(notices) == 2, "nothing said of a known type"
    body = result.stdout.partition("\n\n")[2].encode()
    types = etree.fromstring(body.strip()).xpath("//*[local-name()='EventType']/text()")
    assert types == ["AssignmentAccept", "Bogus", "HITExpired"]


# --- events -----------------------------------------------------------------------------------------


def test_events_lists_at_most_limit_and_refuses_a_negative_limit(tmp_path: Path) -> None:
    """``--limit N`` lists the first N events; a negative N (which SQLite would read as no limit) is exit status 2."""
    events = [{**support.ACCEPTED_EVENT, "AssignmentId": name} for name in ("A", "B", "C")]
    body = amazon_envelope(events=events)
    journal = Journal(tmp_path / "journal.db").open()
    journal.record(parse_notify(body), Arrival(body=body, request_id="r", remote_addr="127.0.0.1"))
    journal.close()
    env = cli_env(SOAPRECEPTOR_JOURNAL=str(tmp_path / "journal.db"))

    listed = soapreceptor("events", "--limit", "2", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[-1] for line in listed.stdout.splitlines()] == ["assignment=A", "assignment=B"]

    refused = soapreceptor("events", "--limit", "-1", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "soapreceptor: --limit must be 0 or more, not -1"
    assert refused.stdout == ""


# --- serve ------------------------------------------------------------------------------------------


def test_serve_runs_gunicorn_with_the_given_bind_and_workers(tmp_path: Path) -> None:
    """``serve --bind 127.0.0.1:0 --workers 1`` overrides SOAPRECEPTOR_BIND/WORKERS and serves Notify calls."""
    server = Server(
        workdir=tmp_path / "serve",
        # If --bind or --workers were ignored, gunicorn would use these instead.
        env={"SOAPRECEPTOR_BIND": f"unix:{tmp_path / 'ignored.sock'}", "SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "0"},
        workers=3,
        command=[str(SCRIPT), "serve", "--bind", "127.0.0.1:0", "--workers", "1"],
    )
    try:
        server.start()  # waits for "Listening at: http://..." in its output, then for /healthz
        answer = post(server.url, amazon_envelope())
        assert answer.status == 200, answer.body
        assert [event["hit_id"] for event in server.wait_for_events(1)] == [support.ACCEPTED_EVENT["HITId"]]
    finally:
        server.stop()
    assert server.process is not None
    assert server.process.returncode == 0
    # Counted once gunicorn has stopped: it spawns all its workers before it handles SIGTERM.
    assert server.log().count("Booting worker") == 1, server.log()


def test_serve_with_a_bad_hook_exits_2_before_starting_gunicorn(tmp_path: Path) -> None:
    """A hook that cannot be imported is one ``soapreceptor: SOAPRECEPTOR_HOOK=...`` line and exit status 2."""
    env = Server(workdir=tmp_path, env={"SOAPRECEPTOR_HOOK": "tests.nonexistent:nope"}).full_env()

    result = soapreceptor("serve", "--bind", "127.0.0.1:0", "--workers", "1", env=env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("soapreceptor: SOAPRECEPTOR_HOOK='tests.nonexistent:nope': cannot import module")
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "gunicorn" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ("--bind", "127.0.0.1:99999"),
            {},
            "soapreceptor: --bind '127.0.0.1:99999': port 99999 is not between 0 and 65535",
            id="option",
        ),
        pytest.param(
            (),
            {"SOAPRECEPTOR_BIND": "localhost:http"},
            "soapreceptor: SOAPRECEPTOR_BIND='localhost:http': 'http' is not a valid port number",
            id="setting",
        ),
    ],
)
def test_serve_with_an_address_gunicorn_cannot_listen_on_exits_2_before_starting_it(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    """A port out of range or not a number is one line and exit status 2, not gunicorn's traceback."""
    full_env = {**Server(workdir=tmp_path).full_env(), **env}

    result = soapreceptor("serve", *args, "--workers", "1", env=full_env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message
    assert "gunicorn" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("bind", "reason"),
    [
        pytest.param(
            "nosuchhost.invalid:8080",
            "the host name 'nosuchhost.invalid' does not resolve (",
            id="unresolvable",
        ),
        # 192.0.2.0/24 is set aside for documentation (RFC 5737): no machine has it.
        pytest.param("192.0.2.1:8080", "'192.0.2.1' is not an address of this machine", id="not-ours"),
    ],
)
def test_serve_where_it_cannot_listen_exits_2_at_once(tmp_path: Path, bind: str, reason: str) -> None:
    """gunicorn would retry each for five seconds and call it a failed connection: one line instead, exit 2."""
    result = soapreceptor(
        "serve", "--bind", bind, "--workers", "1", env=Server(workdir=tmp_path).full_env(), cwd=tmp_path
    )

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"soapreceptor: --bind {bind!r}: cannot listen there: {reason}"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "gunicorn" not in result.stderr + result.stdout


def test_serve_on_a_port_in_use_names_the_setting_and_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {**Server(workdir=tmp_path).full_env(), "SOAPRECEPTOR_BIND": bind}
        result = soapreceptor("serve", "--workers", "1", env=env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"soapreceptor: SOAPRECEPTOR_BIND={bind!r}: cannot listen there: "
        f"port {bind.rpartition(':')[2]} is in use there (another receptor, or another program)"
    )


def test_serve_on_the_default_address_in_use_says_how_to_choose_another(tmp_path: Path) -> None:
    env = Server(workdir=tmp_path).full_env()
    env.pop("SOAPRECEPTOR_BIND", None)
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8080))
            taken.listen()
        except OSError:
            pass  # something else holds it already: in use either way
        result = soapreceptor("serve", "--workers", "1", env=env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        "soapreceptor: the default address '127.0.0.1:8080' (set SOAPRECEPTOR_BIND or pass --bind): "
        "cannot listen there: port 8080 is in use there"
    ), result.stderr


# --- wsdl -------------------------------------------------------------------------------------------


def test_wsdl_prints_the_version_contract_with_the_given_address(tmp_path: Path) -> None:
    """``wsdl --version 2006-08-23 --url URL`` prints that version's WSDL, well-formed, with soap:address = URL."""
    result = soapreceptor(
        "wsdl", "--version", "2006-08-23", "--url", "https://example.org/mturk", env=cli_env(), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    root = etree.fromstring(result.stdout.encode("utf-8"))
    assert root.tag == f"{{{WSDL}}}definitions"
    assert root.get("targetNamespace") == "http://requester.mturk.amazonaws.com/doc/2006-08-23"
    assert [a.get("location") for a in root.iter(f"{{{WSDL_SOAP}}}address")] == ["https://example.org/mturk"]


@pytest.mark.parametrize("scheduler", ["SCHED_IDLE", "none"])
def test_dispatch_idle_takes_the_lowest_priority_there_is(scheduler: str) -> None:
    # In a child: a process cannot raise its own priority again.
    code = "\n".join(
        [
            "import os",
            "from soapreceptor import cli",
            "def refuse(*args): raise OSError('no SCHED_IDLE here')",
            *(["os.sched_setscheduler = refuse"] if scheduler == "none" else []),
            "cli._run_when_idle()",
            "print(os.sched_getscheduler(0) == os.SCHED_IDLE, os.nice(0))",
        ]
    )
    if scheduler == "SCHED_IDLE" and not hasattr(os, "SCHED_IDLE"):
        pytest.skip("SCHED_IDLE is Linux's")
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=support.DEADLINE
    )
    assert done.returncode == 0, done.stderr
    idle, nice = done.stdout.split()
    assert (idle, nice) == (("True", "0") if scheduler == "SCHED_IDLE" else ("False", "19"))


# --- every command that takes --url -----------------------------------------------------------------

FIXTURE = str(support.REPO / "tests" / "fixtures" / "amazon-shape" / "2006-05-05.http")


@pytest.mark.parametrize(
    ("command", "env"),
    [
        pytest.param(("wsdl",), {}, id="wsdl"),
        pytest.param(("send", "--event", "Ping"), {"SOAPRECEPTOR_SECRET": support.KEY_1}, id="send"),
        pytest.param(("replay", FIXTURE), {}, id="replay"),
        pytest.param(("simulate", "--hits", "1"), {"SOAPRECEPTOR_SECRET": support.KEY_1}, id="simulate"),
    ],
)
@pytest.mark.parametrize("url", ["example.org/mturk", "ftp://example.org/mturk", "http://", "http://example.org:http/"])
def test_a_url_that_is_not_an_http_url_is_refused_before_anything_is_sent(
    tmp_path: Path, command: tuple[str, ...], env: dict[str, str], url: str
) -> None:
    """Exit status 2 and one line. Before, replay sent the fixtures for a URL without a scheme to 127.0.0.1:80,
    and wsdl wrote any text into soap:address."""
    result = soapreceptor(command[0], "--url", url, *command[1:], env=cli_env(**env), cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.strip() == f"soapreceptor: --url {url!r} is not an http(s) URL such as https://example.org/mturk"
    )
    assert result.stdout == ""


def test_wsdl_refuses_a_public_url_setting_no_client_could_call(tmp_path: Path) -> None:
    """Without --url, the address is SOAPRECEPTOR_PUBLIC_URL's, and the refusal names that setting."""
    result = soapreceptor("wsdl", env=cli_env(SOAPRECEPTOR_PUBLIC_URL="ftp://example.org/mturk"), cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "soapreceptor: SOAPRECEPTOR_PUBLIC_URL='ftp://example.org/mturk' is not an http(s) URL"
        " such as https://example.org/mturk"
    )
    assert result.stdout == ""
