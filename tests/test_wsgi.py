"""The WSGI application in process: each refusal's fault, the hook, routing, errors that must not escape."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from soapreceptor import Keyring, Settings, versions
from soapreceptor.policy import Policy
from soapreceptor.receptor import Receptor
from soapreceptor.signature import sign
from soapreceptor.wsgi import create_app
from tests.support import ACCEPTED_EVENT, KEY_1, KEY_2, VECTOR_TIMESTAMP, Harness, amazon_envelope, wsdl_url

SIGNED_AT = dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=dt.UTC)


def harness(clock: Callable[[], dt.datetime] = lambda: SIGNED_AT, **settings: Any) -> Harness:
    options: dict[str, Any] = {"keyring": Keyring([KEY_2]), "hook": "tests.recording_hook:record"}
    options.update(settings)
    return Harness(create_app(Settings(**options), clock=clock))


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_accepts_amazon_shape_and_answers_in_the_request_namespace(version: str) -> None:
    h = harness()
    reply = h.notify(amazon_envelope(version))
    assert reply.code == 200
    assert reply.headers["Content-Type"] == "text/xml; charset=utf-8"
    answer = etree.fromstring(reply.body)
    assert answer.find(f".//{{{versions.namespace(version)}}}NotifyResponse") is not None
    assert [e.version for e in h.seen] == [version]
    assert h.seen[0].event_time == dt.datetime(2006, 4, 21, 18, 55, 23, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("body", "soap_action", "settings", "faultcode"),
    [
        (amazon_envelope(signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA="), "", {}, "Client.SignatureMismatch"),
        (amazon_envelope(signature=None), "", {}, "Client.UnsignedMessage"),
        (amazon_envelope(signature=""), "", {}, "Client.UnsignedMessage"),
        (amazon_envelope(signature="DEPRECATED"), "", {}, "Client.UnsignedMessage"),
        (amazon_envelope("2006-05-05"), wsdl_url("2006-10-31"), {}, "Client.VersionMismatch"),
        (amazon_envelope(declared_version="2006-08-23"), "", {}, "Client.VersionMismatch"),
        (amazon_envelope("2005-01-01"), "", {}, "Client.UnknownVersion"),
        (b"<oops", "", {}, "Client.MalformedMessage"),
        (amazon_envelope(events=[]), "", {}, "Client.MalformedMessage"),
        (amazon_envelope(header='<x:S xmlns:x="urn:x" soapenv:mustUnderstand="1"/>'), "", {}, "MustUnderstand"),
        (
            b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
            "",
            {},
            "VersionMismatch",
        ),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><Get/></e:Body></e:Envelope>',
            "",
            {},
            "Client.UnknownOperation",
        ),
    ],
)
def test_each_refusal_has_its_fault_and_the_hook_sees_nothing(
    body: bytes, soap_action: str, settings: dict[str, Any], faultcode: str
) -> None:
    h = harness(**settings)
    reply = h.notify(body, soap_action)
    # SOAP 1.1 over HTTP (and WS-I BP R1126): a Fault is answered with 500.
    assert reply.code == 500
    assert reply.faultcode == faultcode
    assert reply.faultstring
    assert h.seen == []
    for secret in (KEY_2, KEY_2.encode().hex()):
        assert secret not in reply.faultstring
    assert "Traceback" not in reply.faultstring


def test_stale_timestamp_uses_the_receptor_clock() -> None:
    late = harness(clock=lambda: SIGNED_AT + dt.timedelta(seconds=301))
    assert late.notify(amazon_envelope()).faultcode == "Client.StaleTimestamp"
    assert late.seen == []
    on_time = harness(clock=lambda: SIGNED_AT + dt.timedelta(seconds=299))
    assert on_time.notify(amazon_envelope()).code == 200


def test_unsigned_accepted_when_the_operator_chose_it() -> None:
    h = harness(accept_unsigned=True)
    for n, signature in enumerate((None, "", "DEPRECATED")):
        events = [{**ACCEPTED_EVENT, "AssignmentId": f"A{n}"}]
        assert h.notify(amazon_envelope(signature=signature, events=events)).code == 200
    assert [e.assignment_id for e in h.seen] == ["A0", "A1", "A2"]


def test_rotation() -> None:
    h = harness(keyring=Keyring([KEY_1, KEY_2]))
    assert h.notify(amazon_envelope(signature=sign(KEY_1, VECTOR_TIMESTAMP))).code == 200
    assert h.notify(amazon_envelope(signature=sign(KEY_2, VECTOR_TIMESTAMP))).code == 200


def test_every_event_is_journaled_in_order_before_the_answer() -> None:
    h = harness()
    events = [{"EventType": "AssignmentAccepted", "AssignmentId": f"A{i}"} for i in range(10)]
    assert h.notify(amazon_envelope(events=events)).code == 200
    assert [e.assignment_id for e in h.seen] == [f"A{i}" for i in range(10)]


def test_unexpected_errors_become_a_server_fault(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(Policy):
        def check(self, notification: Any, now: dt.datetime) -> None:
            raise KeyError("internal detail")

    app = create_app(Settings(keyring=Keyring([KEY_2])))
    app.receptor = Receptor(policy=Exploding(), journal=app.receptor.journal)
    reply = Harness(app).notify(amazon_envelope())
    assert reply.code == 500
    assert reply.faultcode == "Server"
    assert "internal detail" not in reply.body.decode()
    assert reply.headers["X-Request-Id"] in reply.faultstring


def test_every_answer_has_a_request_id_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    with caplog.at_level(logging.INFO, logger="soapreceptor.access"):
        ok = h.notify(amazon_envelope())
        refused = h.notify(amazon_envelope(signature="x"))
    ids = {ok.headers["X-Request-Id"], refused.headers["X-Request-Id"]}
    assert len(ids) == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "soapreceptor.access"]
    assert any(
        ok.headers["X-Request-Id"] in line and "outcome=accepted" in line and "events=1" in line for line in lines
    )
    assert any("outcome=Client.SignatureMismatch" in line for line in lines)


def test_refusals_outside_soap_are_logged_with_their_faultcode(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    with caplog.at_level(logging.INFO, logger="soapreceptor.access"):
        h.request("PUT")
        h.request("GET", query="wsdl&version=1999-01-01")
        h.request("GET", path="/elsewhere")
    outcomes = [
        r.getMessage().split("outcome=")[1].split()[0] for r in caplog.records if r.name == "soapreceptor.access"
    ]
    assert outcomes == ["Client", "Client.UnknownVersion", "Client"]


def test_wsdl_for_each_version() -> None:
    h = harness(public_url="https://receptor.example.org/mturk")
    default = h.request("GET", path="/mturk", query="wsdl")
    assert default.code == 200
    assert b'location="https://receptor.example.org/mturk"' in default.body
    assert versions.namespace(versions.DEFAULT_VERSION).encode() in default.body
    for version in versions.VERSIONS:
        reply = h.request("GET", path="/mturk", query=f"wsdl&version={version}")
        assert reply.code == 200
        assert f'targetNamespace="{versions.namespace(version)}"'.encode() in reply.body
    unknown = h.request("GET", path="/mturk", query="wsdl&version=2099-01-01")
    assert unknown.code == 404
    assert unknown.faultcode == "Client.UnknownVersion"


def test_notify_is_served_at_the_public_url_path() -> None:
    h = harness(public_url="https://receptor.example.org/mturk")
    assert h.request(body=amazon_envelope(), path="/mturk").code == 200
    elsewhere = h.request(body=amazon_envelope(), path="/")
    assert elsewhere.code == 404
    assert "/mturk" in elsewhere.faultstring
    assert len(h.seen) == 1


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused_with_a_fault(method: str) -> None:
    h = harness()
    reply = h.request(method, body=amazon_envelope())
    assert reply.code == 405
    assert "POST" in reply.headers["Allow"]
    assert reply.faultcode == "Client"
    assert h.seen == []


def test_get_without_wsdl_explains_itself() -> None:
    reply = harness().request("GET")
    assert reply.code == 405
    assert "?wsdl" in reply.faultstring


def test_healthz() -> None:
    reply = harness().request("GET", path="/healthz")
    assert (reply.code, reply.body) == (200, b"ok\n")


def test_readiness_says_when_accepted_messages_could_not_be_stored(tmp_path: Path) -> None:
    h = harness(journal=str(tmp_path / "journal.db"))
    h.app.receptor.journal.heartbeat("a dispatcher")
    ready = h.request("GET", path="/readyz")
    assert (ready.code, ready.body) == (200, b"ready\n")
    spool = tmp_path / "journal.db-spool"
    shutil.rmtree(spool, ignore_errors=True)
    spool.write_text("a file where the spool should be")
    reply = h.request("GET", path="/readyz")
    assert reply.code == 503
    assert reply.body.decode().startswith("accepted messages cannot be stored: ")
    assert "journal.db-spool" in reply.body.decode()
