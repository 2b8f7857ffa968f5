"""Hostile and broken requests against a real gunicorn: each gets its exact refusal, none is journaled,
and the receptor answers a valid message right after each one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from soapreceptor.journal import Journal
from soapreceptor.signature import sign
from soapreceptor.timestamps import format_timestamp
from tests.support import (
    ACCEPTED_EVENT,
    AXIS_HEADERS,
    KEY_2,
    Server,
    amazon_envelope,
    exchange,
    post,
)

MiB = 1024 * 1024
NS = "http://requester.mturk.amazonaws.com/doc/2006-05-05"
ENVELOPE_OPEN = b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'


def fresh(**changes: Any) -> bytes:
    """A valid, freshly signed message, changed as asked (signed over its own Timestamp)."""
    timestamp = changes.pop("timestamp", format_timestamp(dt.datetime.now(dt.UTC)))
    changes.setdefault("signature", sign(KEY_2, timestamp))
    return amazon_envelope(timestamp=timestamp, **changes)


def doctype(internal: str, root: bytes | None = None) -> bytes:
    body = (root or fresh()).split(b"?>", 1)[1]
    return b'<?xml version="1.0"?>\n<!DOCTYPE soapenv:Envelope [' + internal.encode() + b"]>" + body


@dataclass(frozen=True)
class Case:
    """A hostile request: either a body (posted with Axis headers, or ``headers``) or raw bytes on the socket."""

    name: str
    status: int
    faultcode: str
    body: Callable[[], bytes] | None = None
    headers: dict[str, str] | None = None
    method: str = "POST"
    raw: Callable[[], bytes] | None = None
    half_close: bool = False


def _laughs() -> bytes:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    return doctype(entities).replace(b"KDSFO4455LKDAF3KDSFO4455LKDAF3", b"&lol9;")


def _nested(depth: int) -> bytes:
    return fresh().replace(b"<Version>", b"<a>" * depth + b"</a>" * depth + b"<Version>")


def _utf16(codec: str, bom: bool) -> bytes:
    text = (
        doctype('<!ENTITY x SYSTEM "file:///etc/passwd">')
        .decode()
        .replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    )
    return (b"\xff\xfe" if bom and codec == "utf-16-le" else b"") + text.encode(codec)


def _raw(head: str, body: bytes) -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


def _chunked_over_cap() -> bytes:
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(8))
    head = "POST / HTTP/1.1\nHost: x\nContent-Type: text/xml\nTransfer-Encoding: chunked\n"
    return _raw(head, chunks + b"0\r\n\r\n")


CASES = [
    # Entities and DTDs: refused by the gate before any parser runs.
    Case("billion-laughs", 500, "Client.MalformedMessage", _laughs),
    Case("quadratic-blowup", 500, "Client.MalformedMessage",
         lambda: doctype(f'<!ENTITY a "{"x" * 50000}">').replace(b"<HITId>", b"<HITId>" + b"&a;" * 4)),
    Case("external-entity-file", 500, "Client.MalformedMessage",
         lambda: doctype('<!ENTITY x SYSTEM "file:///etc/passwd">').replace(b"<HITId>", b"<HITId>&x;")),
    Case("external-entity-url", 500, "Client.MalformedMessage",
         lambda: doctype('<!ENTITY x SYSTEM "http://127.0.0.1:9/x">').replace(b"<HITId>", b"<HITId>&x;")),
    Case("external-dtd", 500, "Client.MalformedMessage",
         lambda: b'<?xml version="1.0"?><!DOCTYPE e SYSTEM "http://127.0.0.1:9/e.dtd">' + fresh().split(b"?>", 1)[1]),
    Case("parameter-entities", 500, "Client.MalformedMessage",
         lambda: doctype('<!ENTITY % p "<!ENTITY x \'y\'>"> %p;')),
    Case("doctype-utf16-with-bom", 500, "Client.MalformedMessage", lambda: _utf16("utf-16-le", True)),
    Case("doctype-utf16-without-bom", 500, "Client.MalformedMessage", lambda: _utf16("utf-16-be", False)),
    # Size: the cap (256 KiB) holds whatever Content-Length says.
    Case("body-10-mib", 413, "Client.RequestTooLarge", lambda: fresh().replace(b"<Version>", b" " * 10 * MiB + b"<Version>")),
    Case("events-100000", 413, "Client.RequestTooLarge", lambda: fresh(events=[{"EventType": "Ping"}] * 100_000)),
    Case("event-type-1-mib", 413, "Client.RequestTooLarge", lambda: fresh(events=[{"EventType": "A" * MiB}])),
    Case("chunked-over-the-cap", 413, "Client.RequestTooLarge", raw=_chunked_over_cap),
    Case("body-longer-than-content-length", 500, "Client.MalformedMessage",
         raw=lambda: _raw("POST / HTTP/1.1\nHost: x\nContent-Type: text/xml\nContent-Length: 100\n", fresh())),
    Case("body-shorter-than-content-length", 400, "Client.IncompleteBody",
         raw=lambda: _raw("POST / HTTP/1.1\nHost: x\nContent-Type: text/xml\nContent-Length: 5000\n", fresh()),
         half_close=True),
    # Shapes that are not XML, or not well-formed.
    Case("empty-body", 500, "Client.MalformedMessage", lambda: b""),
    Case("invalid-utf8", 500, "Client.MalformedMessage", lambda: fresh().replace(b"KDSFO4455LKDAF3<", b"\xff\xfe\xfa<", 1)),
    Case("nul-bytes", 500, "Client.MalformedMessage", lambda: fresh().replace(b"<Version>", b"\x00<Version>")),
    Case("control-characters-in-ids", 500, "Client.MalformedMessage", lambda: fresh().replace(b"<HITId>", b"<HITId>\x01\x07")),
    Case("control-character-reference", 500, "Client.MalformedMessage", lambda: fresh().replace(b"<HITId>", b"<HITId>&#x1;")),
    Case("deeply-nested-elements", 500, "Client.MalformedMessage", lambda: _nested(5000)),
    Case("processing-instruction", 500, "Client.MalformedMessage", lambda: fresh().replace(b"<Version>", b"<?run rm -rf?><Version>")),
    Case("truncated-document", 500, "Client.MalformedMessage", lambda: fresh()[:300]),
    # SOAP structure.
    Case("wrong-envelope-namespace", 500, "VersionMismatch",
         lambda: fresh().replace(b"http://schemas.xmlsoap.org/soap/envelope/", b"http://www.w3.org/2003/05/soap-envelope")),
    Case("no-envelope", 500, "Client.MalformedMessage", lambda: b"<Notify/>"),
    Case("two-notify-elements", 500, "Client.MalformedMessage",
         lambda: fresh().replace(b"</soapenv:Body>", b"<Notify xmlns='" + NS.encode() + b"'/></soapenv:Body>")),
    Case("notify-outside-body", 500, "Client.MalformedMessage",
         lambda: fresh().replace(b"<soapenv:Body>", b"<soapenv:Header>").replace(b"</soapenv:Body>", b"</soapenv:Header><soapenv:Body/>")),
    Case("must-understand-header", 500, "MustUnderstand",
         lambda: fresh(header='<x:Auth xmlns:x="urn:x" soapenv:mustUnderstand="1">t</x:Auth>')),
    Case("unknown-operation", 500, "Client.UnknownOperation",
         lambda: ENVELOPE_OPEN + b"<soapenv:Body><GetSecrets/></soapenv:Body></soapenv:Envelope>"),
    Case("unknown-namespace", 500, "Client.UnknownVersion", lambda: fresh().replace(NS.encode(), b"urn:evil")),
    Case("missing-event", 500, "Client.MalformedMessage", lambda: fresh(events=[])),
    Case("duplicate-signature", 500, "Client.MalformedMessage",
         lambda: fresh().replace(b"<Signature>", b"<Signature>AAAA</Signature><Signature>", 1)),
    Case("duplicate-timestamp", 500, "Client.MalformedMessage",
         lambda: fresh().replace(b"<Version>", b'<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>')),
    Case("xinclude-in-signature", 500, "Client.MalformedMessage",
         lambda: fresh(signature='<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"/>')),
    Case("comment-inside-timestamp", 500, "Client.MalformedMessage",
         lambda: fresh(timestamp=format_timestamp(dt.datetime.now(dt.UTC))[:10] + "<!-- -->"
                       + format_timestamp(dt.datetime.now(dt.UTC))[10:])),
    # Signatures and time.
    Case("base64-garbage-signature", 500, "Client.SignatureMismatch", lambda: fresh(signature="!!not*base64??")),
    Case("cdata-in-signature", 500, "Client.SignatureMismatch", lambda: fresh(signature="<![CDATA[<Signature>x</Signature>]]>")),
    Case("huge-text-in-signature", 500, "Client.SignatureMismatch", lambda: fresh(signature="A" * 200_000)),
    Case("deprecated-signature", 500, "Client.UnsignedMessage", lambda: fresh(signature="DEPRECATED")),
    Case("timestamp-with-offset-and-fraction", 500, "Client.StaleTimestamp",
         lambda: fresh(timestamp="2006-05-24T04:52:30.123456789+05:30")),
    Case("timestamp-in-9999", 500, "Client.StaleTimestamp", lambda: fresh(timestamp="9999-12-31T23:59:59Z")),
    Case("timestamp-in-1970", 500, "Client.StaleTimestamp", lambda: fresh(timestamp="1970-01-01T00:00:00Z")),
    Case("timestamp-not-a-date", 500, "Client.MalformedMessage", lambda: fresh(timestamp="'; DROP TABLE events; --")),
    Case("version-mismatch-in-soapaction", 500, "Client.VersionMismatch", fresh,
         headers={**AXIS_HEADERS, "SOAPAction": '"http://mechanicalturk.amazonaws.com/AWSMechanicalTurk/2006-10-31/AWSMechanicalTurkRequesterNotification.wsdl"'}),
    # HTTP.
    Case("json-content-type", 415, "Client.UnsupportedMediaType", lambda: b'{"Notify": {}}',
         headers={**AXIS_HEADERS, "Content-Type": "application/json"}),
    Case("missing-content-type", 415, "Client.UnsupportedMediaType", fresh,
         headers={k: v for k, v in AXIS_HEADERS.items() if k != "Content-Type"}),
    Case("get-on-service-url", 405, "Client", lambda: b"", method="GET", headers={}),
    Case("put-on-service-url", 405, "Client", fresh, method="PUT"),
    Case("delete-on-service-url", 405, "Client", lambda: b"", method="DELETE"),
]  # fmt: skip


@pytest.fixture(scope="module")
def receptor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One receptor for the whole suite: 2 workers, KEY_2, the default window, a journal to inspect."""
    workdir = tmp_path_factory.mktemp("adversarial")
    server = Server(workdir=workdir, env={"SOAPRECEPTOR_JOURNAL": str(workdir / "journal.db")})
    try:
        yield server.start()
    finally:
        server.stop()


def request_bytes(case: Case) -> bytes:
    assert case.body is not None
    body = case.body()
    headers = {**(AXIS_HEADERS if case.headers is None else case.headers), "Content-Length": str(len(body))}
    head = f"{case.method} / HTTP/1.1\nHost: receptor.example\nConnection: close\n"
    head += "".join(f"{k}: {v}\n" for k, v in headers.items())
    return _raw(head, body)


def journaled(server: Server) -> int:
    journal = Journal(Path(server.env["SOAPRECEPTOR_JOURNAL"]))
    try:
        return len(journal.events())
    finally:
        journal.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_input_is_refused_precisely(receptor: Server, case: Case) -> None:
    before = journaled(receptor)
    answer = exchange(receptor.url, case.raw() if case.raw else request_bytes(case), case.half_close)
    assert (answer.status, answer.faultcode) == (case.status, case.faultcode), answer.body[:500]
    assert answer.headers["content-type"] == "text/xml; charset=utf-8"
    assert b"Traceback" not in answer.body
    assert KEY_2.encode() not in answer.body
    assert journaled(receptor) == before
    # ...and the receptor still takes a valid message at once.
    valid = fresh(events=[{**ACCEPTED_EVENT, "AssignmentId": f"after-{case.name}"}])
    ok = post(receptor.url, valid)
    assert ok.status == 200, ok.body
    assert journaled(receptor) == before + 1


def test_at_least_forty_named_cases() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 40


def test_the_log_never_shows_the_secret(receptor: Server) -> None:
    assert KEY_2 not in receptor.log()
