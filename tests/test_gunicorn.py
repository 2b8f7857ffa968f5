"""The receptor as deployed: a real gunicorn (deploy/gunicorn.conf.py, 2 workers) on loopback, over real HTTP.

Every test starts its own server through the ``server`` / ``server_factory``
fixtures (stopped when the test ends) and reads what the recording hook saw;
the hook is called by the dispatcher gunicorn runs beside its workers, in the
order the events were journaled.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import zeep
from gunicorn.config import Config
from lxml import etree

from soapreceptor import http_faults, sign
from soapreceptor.journal import Journal
from soapreceptor.sender import EventSpec, Sender
from soapreceptor.server import reexec_args
from soapreceptor.timestamps import format_timestamp
from soapreceptor.worker import http_parser
from tests import support
from tests.support import Answer, Server, amazon_envelope, post, wsdl_url

VERSIONS = ("2006-05-05", "2006-08-23", "2006-10-31")
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
MTURK_NS = "http://requester.mturk.amazonaws.com/doc/"
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(support.REPO / "deploy" / "gunicorn.conf.py")]
APP = "soapreceptor.wsgi:application"
# The signature the server's key (KEY_2) does not make: KEY_1's for the same Timestamp.
OTHER_KEYS_SIGNATURE = support.VECTORS[0][2]
NO_TOLERANCE = {"SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "0"}
AMAZON_SOAP_ACTION = support.AXIS_HEADERS["SOAPAction"]
# A SOAP Header child whose text is a WSDL URL: one of the places the version may be carried.
HEADER_NAMING_2006_10_31 = f'<wsdl xmlns="urn:example:mturk-header">{wsdl_url("2006-10-31")}</wsdl>'

ServerFactory = Callable[..., Server]


def amazon_event(hit_id: str) -> dict[str, str]:
    """Amazon's example event, told apart from the others by its HITId."""
    return {**support.ACCEPTED_EVENT, "HITId": hit_id}


def recorded(event: Mapping[str, str], version: str) -> dict[str, Any]:
    """What the recording hook writes for ``event`` (an ``amazon_envelope`` event) sent under ``version``."""
    return {
        "event_type": event["EventType"],
        "event_time": event["EventTime"].replace("Z", "+00:00"),
        "hit_type_id": event["HITTypeId"],
        "hit_id": event["HITId"],
        "assignment_id": event.get("AssignmentId"),
        "version": version,
    }


def without_pid(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in record.items() if key != "pid"} for record in records]


def fresh_envelope(event: Mapping[str, str], version: str = "2006-05-05") -> bytes:
    """An Amazon-shaped message with a current Timestamp, signed with the servers' key."""
    timestamp = format_timestamp(dt.datetime.now(dt.UTC))
    return amazon_envelope(version, timestamp=timestamp, signature=sign(support.KEY_2, timestamp), events=[event])


def fault_of(answer: Answer) -> tuple[str, str]:
    """The faultcode (local part) and faultstring of a SOAP 1.1 Fault answer."""
    fault = etree.fromstring(answer.body).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None, answer.body
    return fault.findtext("faultcode", "").rpartition(":")[2], fault.findtext("faultstring", "")


def assert_accepted(answer: Answer, version: str) -> None:
    """HTTP 200 with an empty NotifyResponse in the namespace of ``version``."""
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("text/xml")
    body = etree.fromstring(answer.body).find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    assert [child.tag for child in body] == [f"{{{MTURK_NS}{version}}}NotifyResponse"]


def assert_refused(answer: Answer, faultcode: str, status: int = 500) -> str:
    """A SOAP fault with ``faultcode`` that leaks neither the secret nor a traceback; returns the faultstring."""
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith("text/xml")
    assert fault_of(answer)[0] == faultcode, answer.body
    assert support.KEY_2.encode() not in answer.body
    assert b"Traceback" not in answer.body
    return fault_of(answer)[1]


def assert_only_event_after(server: Server) -> None:
    """Send one valid message and check it is the only thing the hook ever saw.

    The refused messages were answered before this one was sent, so had the
    hook been called for them their events would already be on record.
    """
    event = amazon_event("HIT-SENT-AFTER")
    assert_accepted(post(server.url, fresh_envelope(event)), "2006-05-05")
    assert without_pid(server.wait_for_events(1)) == [recorded(event, "2006-05-05")]


def run_until_exit(workdir: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run gunicorn as the fixtures do, expecting it to exit at start; return its status and output."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([*GUNICORN, APP], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=support.DEADLINE)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=support.DEADLINE)
    return process.returncode, output.decode("utf-8", "replace")


# --- the zeep sender, end to end -------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_sender_delivers_every_event_once_with_its_fields(server_factory: ServerFactory, version: str) -> None:
    """A zeep-built, freshly signed batch is accepted under each version and each event reaches the hook once.

    The server keeps the default 300 s freshness window, so the sender's
    timestamp is really checked: the same message with the 2006 timestamp is refused.
    """
    server = server_factory({})
    sender = Sender(server.url, support.KEY_2, version=version)
    accepted_at = dt.datetime(2006, 4, 21, 18, 55, 23, tzinfo=dt.UTC)
    events = [
        EventSpec("AssignmentAccepted", "TYPE-1", "HIT-1", "ASSIGNMENT-1", accepted_at),
        EventSpec("Ping"),
        EventSpec("HITReviewable", "TYPE-1", "HIT-1", event_time=accepted_at + dt.timedelta(hours=1)),
        EventSpec("AssignmentSubmitted", "TYPE-1", "HIT-1", "ASSIGNMENT-1", accepted_at + dt.timedelta(minutes=5)),
    ]

    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = sender.send(events)
    after = dt.datetime.now(dt.UTC)

    assert result.accepted, result
    assert result.status == 200
    seen = without_pid(server.wait_for_events(len(events)))
    ping_time = dt.datetime.fromisoformat(seen[1].pop("event_time"))
    assert before <= ping_time <= after
    assert seen == [
        {
            "event_type": "AssignmentAccepted",
            "event_time": "2006-04-21T18:55:23+00:00",
            "hit_type_id": "TYPE-1",
            "hit_id": "HIT-1",
            "assignment_id": "ASSIGNMENT-1",
            "version": version,
        },
        {"event_type": "Ping", "hit_type_id": None, "hit_id": None, "assignment_id": None, "version": version},
        {
            "event_type": "HITReviewable",
            "event_time": "2006-04-21T19:55:23+00:00",
            "hit_type_id": "TYPE-1",
            "hit_id": "HIT-1",
            "assignment_id": None,
            "version": version,
        },
        {
            "event_type": "AssignmentSubmitted",
            "event_time": "2006-04-21T19:00:23+00:00",
            "hit_type_id": "TYPE-1",
            "hit_id": "HIT-1",
            "assignment_id": "ASSIGNMENT-1",
            "version": version,
        },
    ]

    stale = sender.send(events, timestamp=support.VECTOR_TIMESTAMP)
    assert (stale.status, stale.faultcode) == (500, "Client.StaleTimestamp")
    # Events are handed on in arrival order: once a later one is through, any repeat would be on record.
    assert sender.send([EventSpec("HITExpired", "TYPE-1", "HIT-LAST", event_time=accepted_at)]).accepted
    assert [record["hit_id"] for record in server.wait_for_events(len(events) + 1)] == [
        "HIT-1",
        None,
        "HIT-1",
        "HIT-1",
        "HIT-LAST",
    ]


# --- Amazon-shaped bytes -------------------------------------------------------------------------


def _axis_headers(soap_action: str | None) -> dict[str, str]:
    headers = {k: v for k, v in support.AXIS_HEADERS.items() if k != "SOAPAction"}
    if soap_action is not None:
        headers["SOAPAction"] = soap_action
    return headers


@pytest.mark.parametrize(
    ("version", "soap_action", "header"),
    [
        pytest.param("2006-05-05", None, None, id="soapaction-missing"),
        pytest.param("2006-05-05", "", None, id="soapaction-empty"),
        pytest.param("2006-05-05", '""', None, id="soapaction-empty-quoted"),
        pytest.param("2006-05-05", '"http://soap.amazon.com"', None, id="soapaction-quoted"),
        pytest.param("2006-05-05", "http://soap.amazon.com", None, id="soapaction-unquoted"),
        pytest.param("2006-10-31", f'"{wsdl_url("2006-10-31")}"', None, id="wsdl-url-in-soapaction-quoted"),
        pytest.param("2006-08-23", wsdl_url("2006-08-23"), None, id="wsdl-url-in-soapaction-unquoted"),
        pytest.param(
            "2006-10-31",
            AMAZON_SOAP_ACTION,
            HEADER_NAMING_2006_10_31,
            id="wsdl-url-in-soap-header",
        ),
    ],
)
def test_amazon_message_is_accepted_however_soapaction_is_sent(
    server: Server, version: str, soap_action: str | None, header: str | None
) -> None:
    """Amazon's example message, signed with the protocol's test vector, is accepted whatever SOAPAction holds."""
    event = amazon_event(f"HIT-{version}")
    answer = post(server.url, amazon_envelope(version, events=[event], header=header), _axis_headers(soap_action))

    assert_accepted(answer, version)
    assert without_pid(server.wait_for_events(1)) == [recorded(event, version)]


@pytest.mark.parametrize(
    ("env", "envelope", "soap_action", "faultcode"),
    [
        pytest.param(
            NO_TOLERANCE,
            {"signature": OTHER_KEYS_SIGNATURE},
            AMAZON_SOAP_ACTION,
            "Client.SignatureMismatch",
            id="signed-with-another-key",
        ),
        # The default 300 s window, and the protocol's 2006 test vector.
        pytest.param({}, {}, AMAZON_SOAP_ACTION, "Client.StaleTimestamp", id="stale-timestamp"),
        pytest.param(
            NO_TOLERANCE, {"signature": None}, AMAZON_SOAP_ACTION, "Client.UnsignedMessage", id="signature-missing"
        ),
        pytest.param(
            NO_TOLERANCE, {"signature": ""}, AMAZON_SOAP_ACTION, "Client.UnsignedMessage", id="signature-empty"
        ),
        pytest.param(
            NO_TOLERANCE,
            {"signature": "DEPRECATED"},
            AMAZON_SOAP_ACTION,
            "Client.UnsignedMessage",
            id="signature-DEPRECATED",
        ),
        pytest.param(
            NO_TOLERANCE,
            {},
            f'"{wsdl_url("2006-08-23")}"',
            "Client.VersionMismatch",
            id="soapaction-version-differs-from-namespace",
        ),
        pytest.param(
            NO_TOLERANCE,
            {"header": HEADER_NAMING_2006_10_31},
            AMAZON_SOAP_ACTION,
            "Client.VersionMismatch",
            id="soap-header-version-differs-from-namespace",
        ),
    ],
)
def test_refused_message_gets_a_clean_fault_and_never_reaches_the_hook(
    server_factory: ServerFactory, env: dict[str, str], envelope: dict[str, Any], soap_action: str, faultcode: str
) -> None:
    """Each refusal is HTTP 500 + text/xml + its exact faultcode, leaks nothing, and calls no hook.

    The messages are 2006-05-05 ones, signed with the test vector unless ``envelope`` says otherwise.
    """
    server = server_factory(env)
    body = amazon_envelope("2006-05-05", events=[amazon_event("HIT-REFUSED")], **envelope)

    assert_refused(post(server.url, body, _axis_headers(soap_action)), faultcode)
    assert_only_event_after(server)


@pytest.mark.parametrize(
    ("secret", "badly_signed"),
    [
        pytest.param(support.KEY_2, OTHER_KEYS_SIGNATURE, id="with-a-secret"),
        pytest.param("", support.VECTORS[1][2], id="without-any-secret"),
    ],
)
def test_accept_unsigned_lets_unsigned_through_but_not_a_wrong_signature(
    server_factory: ServerFactory, secret: str, badly_signed: str
) -> None:
    """SOAPRECEPTOR_ACCEPT_UNSIGNED=1: missing, empty and DEPRECATED pass; a signature it cannot verify does not."""
    server = server_factory({"SOAPRECEPTOR_ACCEPT_UNSIGNED": "1", "SOAPRECEPTOR_SECRET": secret, **NO_TOLERANCE})

    wrong = post(server.url, amazon_envelope(signature=badly_signed, events=[amazon_event("HIT-WRONG")]))
    assert_refused(wrong, "Client.SignatureMismatch")
    unsigned = {"HIT-MISSING": None, "HIT-EMPTY": "", "HIT-DEPRECATED": "DEPRECATED"}
    for hit_id, signature in unsigned.items():
        answer = post(server.url, amazon_envelope(signature=signature, events=[amazon_event(hit_id)]))
        assert_accepted(answer, "2006-05-05")

    seen = server.wait_for_events(len(unsigned))
    assert [record["hit_id"] for record in seen] == list(unsigned)


def test_secret_file_accepts_every_key_during_a_rotation(server_factory: ServerFactory, tmp_path: Path) -> None:
    """SOAPRECEPTOR_SECRET_FILE with two keys, a comment and a blank line: both keys verify, the comment is no key."""
    comment = "# rotating: the old key first, the new one below"
    secrets = tmp_path / "secrets"
    secrets.write_text(f"{comment}\n{support.KEY_1}\n\n{support.KEY_2}\n", encoding="utf-8")
    server = server_factory({"SOAPRECEPTOR_SECRET": "", "SOAPRECEPTOR_SECRET_FILE": str(secrets), **NO_TOLERANCE})
    signed_by_old, signed_by_new = support.VECTORS[0], support.VECTORS[1]

    for hit_id, (_, timestamp, signature) in (("HIT-OLD-KEY", signed_by_old), ("HIT-NEW-KEY", signed_by_new)):
        answer = post(
            server.url, amazon_envelope(timestamp=timestamp, signature=signature, events=[amazon_event(hit_id)])
        )
        assert_accepted(answer, "2006-05-05")
    by_comment = sign(comment, support.VECTOR_TIMESTAMP)
    refused = post(server.url, amazon_envelope(signature=by_comment, events=[amazon_event("HIT-COMMENT")]))
    assert_refused(refused, "Client.SignatureMismatch")

    assert [record["hit_id"] for record in server.wait_for_events(2)] == ["HIT-OLD-KEY", "HIT-NEW-KEY"]


# --- the contract ------------------------------------------------------------------------------


PUBLIC_URL = "https://receptor.example.org/mturk/notify"


def _wsdl_facts(document: bytes) -> tuple[str | None, list[str | None]]:
    root = etree.fromstring(document)
    return root.get("targetNamespace"), [address.get("location") for address in root.iter(f"{{{WSDL_SOAP}}}address")]


@pytest.mark.parametrize("version", VERSIONS)
def test_served_wsdl_carries_the_public_url_and_builds_a_zeep_client(
    server_factory: ServerFactory, tmp_path: Path, version: str
) -> None:
    """``GET <path>?wsdl&version=V`` is V's contract at SOAPRECEPTOR_PUBLIC_URL, and zeep can use it."""
    server = server_factory({"SOAPRECEPTOR_PUBLIC_URL": PUBLIC_URL})

    answer = post(f"{server.url}mturk/notify?wsdl&version={version}", b"", headers={}, method="GET")

    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert _wsdl_facts(answer.body) == (MTURK_NS + version, [PUBLIC_URL])
    path = tmp_path / f"served-{version}.wsdl"
    path.write_bytes(answer.body)
    client = zeep.Client(str(path))
    ports = [port for service in client.wsdl.services.values() for port in service.ports.values()]
    assert [port.binding_options["address"] for port in ports] == [PUBLIC_URL]
    notify = ports[0].binding.get("Notify")
    assert notify.input.body.qname == f"{{{MTURK_NS}{version}}}Notify"


def test_wsdl_defaults_to_2006_05_05_and_unknown_versions_get_a_fault(server_factory: ServerFactory) -> None:
    """Plain ``?wsdl`` is the 2006-05-05 contract; ``?wsdl&version=`` of an unknown version is a 404 fault."""
    server = server_factory({"SOAPRECEPTOR_PUBLIC_URL": PUBLIC_URL})

    default = post(f"{server.url}mturk/notify?wsdl", b"", headers={}, method="GET")
    assert default.status == 200
    assert _wsdl_facts(default.body) == (MTURK_NS + "2006-05-05", [PUBLIC_URL])

    unknown = post(f"{server.url}mturk/notify?wsdl&version=2007-06-21", b"", headers={}, method="GET")
    assert "2007-06-21" in assert_refused(unknown, "Client.UnknownVersion", status=404)


# --- start-up --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "unset", "message"),
    [
        pytest.param(
            {"SOAPRECEPTOR_HOOK": "tests.nonexistent:nope"},
            (),
            "soapreceptor: SOAPRECEPTOR_HOOK='tests.nonexistent:nope': cannot import module 'tests.nonexistent'",
            id="hook-not-importable",
        ),
        pytest.param(
            {"SOAPRECEPTOR_HOOK": "tests.recording_hook:NOT_CALLABLE"},
            (),
            "soapreceptor: SOAPRECEPTOR_HOOK='tests.recording_hook:NOT_CALLABLE': 'NOT_CALLABLE' is not callable",
            id="hook-not-callable",
        ),
        pytest.param(
            {},
            ("SOAPRECEPTOR_SECRET",),
            "soapreceptor: no secret is configured: set SOAPRECEPTOR_SECRET",
            id="secret-unset",
        ),
        pytest.param(
            {"SOAPRECEPTOR_SECRET": ""},
            (),
            "soapreceptor: no secret is configured: set SOAPRECEPTOR_SECRET",
            id="secret-empty",
        ),
        pytest.param(
            {"SOAPRECEPTOR_SECRET": "  "},
            (),
            "soapreceptor: no secret is configured: set SOAPRECEPTOR_SECRET",
            id="secret-blank",
        ),
        pytest.param(
            {"SOAPRECEPTOR_CPU_AFFINITY": "nearest"},
            (),
            "soapreceptor: SOAPRECEPTOR_CPU_AFFINITY is 'nearest'; use 'auto'",
            id="cpu-affinity",
        ),
        pytest.param(
            {"SOAPRECEPTOR_SCHED_POLICY": "fifo"},
            (),
            "soapreceptor: SOAPRECEPTOR_SCHED_POLICY is 'fifo'; use 'batch'",
            id="sched-policy",
        ),
        pytest.param(
            {"SOAPRECEPTOR_BIND": "127.0.0.1:99999"},
            (),
            "soapreceptor: SOAPRECEPTOR_BIND='127.0.0.1:99999': port 99999 is not between 0 and 65535",
            id="bind-port",
        ),
        *(
            pytest.param(
                {name: value},
                (),
                f"soapreceptor: {name}={value!r} is not a whole number of 1 or more",
                id=f"{name.removeprefix('SOAPRECEPTOR_').lower()}-{value}",
            )
            for name in ("SOAPRECEPTOR_WORKERS", "SOAPRECEPTOR_THREADS")
            for value in ("two", "0")
        ),
    ],
)
def test_gunicorn_refuses_to_start_with_unusable_settings(
    tmp_path: Path, env: dict[str, str], unset: tuple[str, ...], message: str
) -> None:
    """A bad hook or no secret stops gunicorn at start, non-zero, with one ``soapreceptor:`` line naming the setting.

    It leaves nothing behind in the temporary directory: the metrics
    directory the settings made goes with the master, not at the next start.
    """
    full_env = Server(workdir=tmp_path, env=env).full_env()
    for name in unset:
        del full_env[name]

    status, output = run_until_exit(tmp_path, full_env)

    assert status != 0, output
    assert "Listening at" not in output
    assert "Booting worker" not in output
    lines = [line for line in output.splitlines() if line.startswith("soapreceptor: ")]
    assert len(lines) == 1, output
    assert lines[0].startswith(message), output
    assert not list(Path(full_env["TMPDIR"]).iterdir())


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        pytest.param(
            ["/v/bin/python", "/v/lib/python3.11/site-packages/gunicorn/__main__.py", "-c", "x.py", APP],
            ["/v/bin/python", "-m", "gunicorn", "-c", "x.py", APP],
            id="python-m-gunicorn",
        ),
        pytest.param(["/v/bin/python", "/v/bin/gunicorn", "-c", "x.py", APP], None, id="console-script"),
        pytest.param(["/v/bin/python", "/srv/app/__main__.py", APP], None, id="another-main"),
        pytest.param(["/v/bin/python"], None, id="no-arguments"),
    ],
)
def test_an_upgrade_in_place_starts_gunicorn_as_it_was_started(recorded: list[str], expected: list[str] | None) -> None:
    """``python -m gunicorn`` starts again with ``-m``, not as a script (gunicorn issue 3281); the rest as they were."""
    assert reexec_args(recorded) == (recorded if expected is None else expected)


# --- failures while serving, and the HTTP surface ---------------------------------------------------


def test_failing_hook_does_not_fail_the_answer_and_the_event_waits_for_a_retry(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """A hook that raises runs in the dispatcher, after the answer: MTurk gets 200, the event stays pending.

    The failure is in the journal (last_error, a retry time) and in the log,
    and the server keeps answering.
    """
    journal_path = tmp_path / "journal.db"
    server = server_factory(
        {"SOAPRECEPTOR_HOOK": "tests.recording_hook:fail", "SOAPRECEPTOR_JOURNAL": str(journal_path), **NO_TOLERANCE}
    )
    hit_ids = ["HIT-FIRST", "HIT-SECOND"]
    for hit_id in hit_ids:
        assert_accepted(post(server.url, amazon_envelope(events=[amazon_event(hit_id)])), "2006-05-05")

    journal = Journal(journal_path)
    try:
        stored = support.wait_for(
            lambda: (events := journal.events()) and all(event.last_error for event in events) and events,
            "the dispatcher to try both events",
        )
    finally:
        journal.close()
    assert [event.event.hit_id for event in stored] == hit_ids
    for event in stored:
        assert event.state == "pending"
        assert event.attempts >= 1
        assert event.last_error is not None
        assert event.last_error.startswith("RuntimeError: this hook always fails (AssignmentAccepted)")
        assert event.next_attempt_at is not None
        assert event.next_attempt_at > event.updated_at
    support.wait_for(lambda: "RuntimeError: this hook always fails" in server.log(), "the failure in the log")
    assert post(server.url + "healthz", b"", headers={}, method="GET").status == 200
    assert_accepted(post(server.url, fresh_envelope(amazon_event("HIT-THIRD"))), "2006-05-05")
    assert server.events() == []


def test_every_answer_carries_a_distinct_request_id(server: Server) -> None:
    """Accepted, refused, WSDL, health, 404 and 405 answers all carry their own X-Request-Id."""
    answers = [
        post(server.url, amazon_envelope()),
        post(server.url, amazon_envelope(signature=None)),
        post(server.url, b"<not-xml", support.AXIS_HEADERS),
        post(server.url + "?wsdl", b"", headers={}, method="GET"),
        post(server.url + "healthz", b"", headers={}, method="GET"),
        post(server.url + "nowhere", amazon_envelope()),
        post(server.url, b"", headers={}, method="DELETE"),
    ]

    assert [answer.status for answer in answers] == [200, 500, 500, 200, 200, 404, 405]
    request_ids = [answer.headers.get("x-request-id", "") for answer in answers]
    assert all(request_ids), request_ids
    assert len(set(request_ids)) == len(request_ids)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "nowhere", 404, id="GET-unknown-path"),
        pytest.param("POST", "nowhere", 404, id="POST-unknown-path"),
        pytest.param("PUT", "", 405, id="PUT-service"),
        pytest.param("DELETE", "", 405, id="DELETE-service"),
        pytest.param("GET", "", 405, id="GET-service-without-wsdl"),
    ],
)
def test_wrong_path_or_method_gets_a_soap_fault(server: Server, method: str, path: str, status: int) -> None:
    """Unknown paths are 404 and other methods on the service URL 405 (with Allow), each a Client fault."""
    body = amazon_envelope() if method in ("POST", "PUT") else b""
    answer = post(server.url + path, body, method=method)

    assert_refused(answer, "Client", status=status)
    if status == 405:
        assert answer.headers["allow"] == "POST, GET"
    assert server.events() == []


# "says": gunicorn's reason, as its Python parser words it or its C one (gunicorn_h1c, the fast extra).
@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 9000 + b"\r\n\r\n",
            431,
            r"limit request headers fields size|Header size \(9013\) exceeds limit \(8190\)",
            id="header-over-limit",
        ),
        pytest.param(
            b"POST /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
            r"Request Line is too large|Request line length \(5015\) exceeds limit \(4094\)",
            id="long-line",
        ),
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", 400, "Invalid Request Line", id="not-http"),
    ],
)
def test_requests_gunicorn_refuses_itself_get_a_soap_fault_that_says_why(
    server: Server, request_bytes: bytes, status: int, says: str
) -> None:
    """Refused before the application runs, and still a Client fault with gunicorn's reason, not an HTML page."""
    answer = support.exchange(server.url, request_bytes)

    assert answer.status == status
    assert answer.headers["content-type"] == "text/xml; charset=utf-8"
    assert int(answer.headers["content-length"]) == len(answer.body)
    faultcode, faultstring = fault_of(answer)
    assert faultcode == "Client"
    assert f"refused before it reached the SOAP service ({status} " in faultstring
    assert re.search(says, faultstring)
    assert server.events() == []


def test_the_log_says_which_http_parser_gunicorn_reads_requests_with(server: Server) -> None:
    expected = f"soapreceptor: gunicorn reads requests with {http_parser(Config())}"
    support.wait_for(lambda: expected in server.log(), "the HTTP parser named in the log")


def test_a_refusal_that_is_the_receptors_fault_is_a_server_fault() -> None:
    # gunicorn answers 500 with no message when reading a request raised something unexpected.
    fault = http_faults.fault_for(500, "Internal Server Error", "")
    assert fault.faultcode == "Server"
    assert fault.faultstring == (
        "the receptor's HTTP server failed to read the request (500 Internal Server Error); its log says why"
    )
    assert http_faults.fault_for(501, "Not Implemented", "unsupported transfer coding: 'gzip'").faultcode == "Server"
