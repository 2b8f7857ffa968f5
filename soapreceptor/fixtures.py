"""Recorded MTurk notifications: the file format, and the standard set in ``tests/fixtures/``.

A fixture is one raw HTTP request, kept byte for byte, after a few comment
lines that say what it is and what answer it must get::

    # soapreceptor-fixture: 1
    # description: Amazon's documented shape, version 2006-05-05
    # key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
    # signing: signed
    # expect: 200
    POST / HTTP/1.1\\r\\n
    Host: receptor.example\\r\\n
    ...headers...\\r\\n
    \\r\\n
    <body: exactly Content-Length bytes>

Comment lines end with ``\\n``; the request itself is HTTP/1.1 as sent, with
``\\r\\n`` line ends (``.gitattributes`` keeps git from touching them).

``key`` is the secret the message was signed with (protocol.md's public test
vectors), or ``none``. ``signing`` is how: ``signed``, ``wrong-key``,
``unsigned`` (no Signature), ``empty``, ``deprecated``. ``timestamp`` is
``recorded`` or ``stale``. ``expect`` is the answer from a receptor that has
the fixture's key and ``SOAPRECEPTOR_TIMESTAMP_TOLERANCE=0`` (the recorded
Timestamps are from 2006); ``expect-resigned``, when present, is the answer
once ``soapreceptor replay --resign`` has given the message a fresh Timestamp
(an hour old for ``timestamp: stale``) and signed it again as ``signing`` says,
against a receptor with the default window and the replayer's secret.

Regenerate the standard set with ``python -m soapreceptor.fixtures tests/fixtures``:
the output is the same every time.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from . import versions
from .model import EventType
from .signature import DEPRECATED, sign
from .timestamps import format_timestamp

FORMAT: Final[str] = "1"
SUFFIX: Final[str] = ".http"
SIGNING: Final[tuple[str, ...]] = ("signed", "wrong-key", "unsigned", "empty", "deprecated")

# protocol.md section 4: published test keys, so the fixtures are safe to share.
VECTOR_KEYS: Final[tuple[str, ...]] = (
    "zzT2CTVVfFeXw/OrwezR8inI5WwiO/mlfGEXxvP1",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
)
RECORDED_AT: Final[str] = "2006-05-23T23:22:30Z"
STALE_BY: Final[dt.timedelta] = dt.timedelta(hours=1)

#: The HTTP headers of an Apache Axis 1.x client, which MTurk was (protocol.md section 3).
AXIS_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("Content-Type", "text/xml; charset=utf-8"),
    ("Accept", "application/soap+xml, application/dime, multipart/related, text/*"),
    ("User-Agent", "Jakarta Commons-HttpClient/2.0final"),
    ("Host", "receptor.example"),
    ("Cache-Control", "no-cache"),
    ("Pragma", "no-cache"),
    ("SOAPAction", f'"{versions.SOAP_ACTION}"'),
)


@dataclass(frozen=True)
class Expectation:
    """An HTTP status and, for a fault, its faultcode."""

    status: int
    faultcode: str | None = None

    @classmethod
    def parse(cls, text: str) -> Expectation:
        parts = text.split()
        if not parts or not parts[0].isdigit() or len(parts) > 2:
            raise ValueError(f"expectation {text!r} is not 'STATUS' or 'STATUS FAULTCODE'")
        return cls(int(parts[0]), parts[1] if len(parts) == 2 else None)

    def __str__(self) -> str:
        return f"{self.status} {self.faultcode}" if self.faultcode else str(self.status)


@dataclass(frozen=True)
class Fixture:
    """One recorded request and what it must get."""

    name: str
    description: str
    key: str | None
    signing: str
    expect: Expectation
    expect_resigned: Expectation | None = None
    stale: bool = False
    method: str = "POST"
    target: str = "/"
    headers: tuple[tuple[str, str], ...] = AXIS_HEADERS
    body: bytes = b""
    comments: tuple[str, ...] = field(default=())

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def render(self) -> bytes:
        """The fixture file's bytes."""
        lines = [
            f"# soapreceptor-fixture: {FORMAT}",
            f"# description: {self.description}",
            f"# key: {self.key or 'none'}",
            f"# signing: {self.signing}",
            f"# timestamp: {'stale' if self.stale else 'recorded'}",
            f"# expect: {self.expect}",
        ]
        if self.expect_resigned is not None:
            lines.append(f"# expect-resigned: {self.expect_resigned}")
        lines += [f"# {comment}" for comment in self.comments]
        head = "".join(line + "\n" for line in lines).encode("utf-8")
        headers = [(k, v) for k, v in self.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(self.body))))
        request = f"{self.method} {self.target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        return head + request.encode("latin-1") + self.body

    def resigned(self, secret: str, now: dt.datetime) -> Fixture:
        """This request with a fresh Timestamp (an hour old if ``stale``), signed again as ``signing`` says."""
        moment = now - STALE_BY if self.stale else now
        timestamp = format_timestamp(moment)
        body = _TIMESTAMP.sub(lambda m: m.group(1) + timestamp.encode() + m.group(3), self.body, count=1)
        if self.signing in ("signed", "wrong-key"):
            key = secret if self.signing == "signed" else "not-" + secret
            signature = sign(key, timestamp).encode()
            body = _SIGNATURE.sub(lambda m: m.group(1) + signature + m.group(3), body, count=1)
        return replace(self, body=body)


_TIMESTAMP = re.compile(rb"(<(?:\w+:)?Timestamp\b[^>]*>)([^<]*)(</(?:\w+:)?Timestamp>)")
_SIGNATURE = re.compile(rb"(<(?:\w+:)?Signature\b[^>]*>)([^<]*)(</(?:\w+:)?Signature>)")


_META: Final[frozenset[str]] = frozenset(
    {"soapreceptor-fixture", "description", "key", "signing", "timestamp", "expect", "expect-resigned"}
)


def parse(data: bytes, name: str = "<fixture>") -> Fixture:
    """Read a fixture file; ValueError says what is wrong and where."""
    meta: dict[str, str] = {}
    comments: list[str] = []
    rest = data
    while rest.startswith(b"#"):
        raw, _, rest = rest.partition(b"\n")
        comment = raw[1:].decode("utf-8").strip()
        key, sep, value = comment.partition(":")
        if sep and key.strip() in _META:
            meta[key.strip()] = value.strip()
        else:
            comments.append(comment)
    if meta.get("soapreceptor-fixture") != FORMAT:
        raise ValueError(f"{name}: not a soapreceptor fixture (no '# soapreceptor-fixture: {FORMAT}' line first)")
    head, crlf, body = rest.partition(b"\r\n\r\n")
    if not crlf:
        raise ValueError(f"{name}: no blank line (CRLF CRLF) after the request headers")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _protocol = request_line.split(" ")
    except ValueError:
        raise ValueError(f"{name}: bad request line {request_line!r}") from None
    headers = []
    for line in header_lines:
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{name}: bad header line {line!r}")
        headers.append((key.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), len(body))
    if length != len(body):
        raise ValueError(f"{name}: Content-Length says {length} bytes, the body has {len(body)}")
    signing = meta.get("signing", "signed")
    if signing not in SIGNING:
        raise ValueError(f"{name}: signing {signing!r} is not one of {', '.join(SIGNING)}")
    try:
        expect = Expectation.parse(meta.get("expect", ""))
        resigned = Expectation.parse(meta["expect-resigned"]) if "expect-resigned" in meta else None
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    key = meta.get("key", "none")
    return Fixture(
        name=name,
        description=meta.get("description", ""),
        key=None if key == "none" else key,
        signing=signing,
        expect=expect,
        expect_resigned=resigned,
        stale=meta.get("timestamp") == "stale",
        method=method,
        target=target,
        headers=tuple(headers),
        body=body,
        comments=tuple(comments),
    )


def load(paths: Iterable[str | Path]) -> list[Fixture]:
    """Read fixture files and the ``*.http`` files of directories, in name order."""
    found: list[Fixture] = []
    for given in paths:
        path = Path(given)
        files = sorted(path.rglob(f"*{SUFFIX}")) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise ValueError(f"{path}: no *{SUFFIX} fixture in this directory")
        for file in files:
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise ValueError(f"{file}: cannot be read: {exc.strerror}") from None
            found.append(parse(data, str(file)))
    return found


# -- the standard set ---------------------------------------------------------------


def amazon_envelope(
    version: str = versions.DEFAULT_VERSION,
    *,
    signature: str | None,
    timestamp: str,
    events: Iterable[Mapping[str, str]],
    declared_version: str | None = None,
    header: str | None = None,
) -> bytes:
    """A Notify call in the exact shape of Amazon's documented example (protocol.md section 3).

    ``signature=None`` leaves the element out; ``header`` goes verbatim into a SOAP Header.
    """
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"',
        '    xmlns:xsd="http://www.w3.org/2001/XMLSchema"',
        '    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">',
    ]
    if header is not None:
        lines.append(f"  <soapenv:Header>{header}</soapenv:Header>")
    lines += ["  <soapenv:Body>", f'    <Notify xmlns="{versions.namespace(version)}">']
    if signature is not None:
        lines.append(f"      <Signature>{signature}</Signature>")
    lines.append(f'      <Timestamp xsi:type="xsd:dateTime">{timestamp}</Timestamp>')
    lines.append(f"      <Version>{declared_version or version}</Version>")
    for event in events:
        lines.append("      <Event>")
        lines += [f"        <{name}>{value}</{name}>" for name, value in event.items()]
        lines.append("      </Event>")
    lines += ["    </Notify>", "  </soapenv:Body>", "</soapenv:Envelope>", ""]
    return "\n".join(lines).encode("utf-8")


def _event(event_type: str, n: int) -> dict[str, str]:
    """A plausible event: MTurk-like ids, an EventTime, no AssignmentId where MTurk sent none."""
    event = {
        "EventType": event_type,
        "EventTime": f"2006-05-23T23:{(n // 60) % 60:02d}:{n % 60:02d}Z",
        "HITTypeId": "KDSFO4455LKDAF3HITTYPE0000001",
        "HITId": f"KDSFO4455LKDAF3HIT{n // 4:011d}",
        "AssignmentId": f"KDSFO4455LKDAF3ASSIGNMENT{n:011d}KDSFO4455LKDAF3",
    }
    if event_type in ("HITReviewable", "HITExpired", "HITCreated", "HITExtended", "HITDisposed"):
        del event["AssignmentId"]
    return event


def _fixture(
    name: str,
    description: str,
    *,
    version: str = versions.DEFAULT_VERSION,
    events: Sequence[Mapping[str, str]],
    signing: str = "signed",
    key: str = VECTOR_KEYS[1],
    expect: str = "200",
    expect_resigned: str | None = None,
    stale: bool = False,
    declared_version: str | None = None,
    header: str | None = None,
    soap_action: str | None = None,
) -> Fixture:
    signature = {
        "signed": sign(key, RECORDED_AT),
        "wrong-key": sign("not-" + key, RECORDED_AT),
        "unsigned": None,
        "empty": "",
        "deprecated": DEPRECATED,
    }[signing]
    body = amazon_envelope(
        version,
        signature=signature,
        timestamp=RECORDED_AT,
        events=events,
        declared_version=declared_version,
        header=header,
    )
    headers = tuple(
        (k, f'"{soap_action}"' if k == "SOAPAction" and soap_action is not None else v) for k, v in AXIS_HEADERS
    )
    return Fixture(
        name=name,
        description=description,
        key=key if signing in ("signed", "wrong-key") else None,
        signing=signing,
        expect=Expectation.parse(expect),
        expect_resigned=Expectation.parse(expect_resigned) if expect_resigned else None,
        stale=stale,
        headers=headers,
        body=body,
    )


def standard_set() -> list[Fixture]:
    """Every fixture of ``tests/fixtures/``, built the same way every time."""
    fixtures: list[Fixture] = []
    for version in versions.VERSIONS:
        fixtures.append(
            _fixture(
                f"amazon-shape/{version}",
                f"Amazon's documented shape, version {version}: one AssignmentAccepted",
                version=version,
                events=[_event("AssignmentAccepted", 0)],
            )
        )
        fixtures.append(
            _fixture(
                f"version-in-soapaction/{version}",
                f"version {version} also named by the WSDL URL in SOAPAction",
                version=version,
                events=[_event("AssignmentSubmitted", 1)],
                soap_action=versions.wsdl_url(version),
            )
        )
        fixtures.append(
            _fixture(
                f"version-in-header/{version}",
                f"version {version} also named by a SOAP Header whose text is the WSDL URL",
                version=version,
                events=[_event("AssignmentReturned", 2)],
                header=f'<WSDL xmlns="{versions.namespace(version)}">{versions.wsdl_url(version)}</WSDL>',
            )
        )
    for n, event_type in enumerate([*EventType, "SomeFutureEventType"]):
        fixtures.append(
            _fixture(
                f"event-types/{event_type}",
                f"one {event_type} event"
                + ("" if event_type in set(EventType) else " (a type no MTurk document names)"),
                events=[_event(event_type, 100 + n)],
                key=VECTOR_KEYS[n % 2],
            )
        )
    fixtures.append(
        _fixture("event-types/Ping-bare", "a Ping with no HIT fields and no EventTime", events=[{"EventType": "Ping"}])
    )
    for size in (1, 2, 10, 100):
        kinds = ["AssignmentAccepted", "AssignmentSubmitted", "AssignmentReturned", "AssignmentAbandoned"]
        fixtures.append(
            _fixture(
                f"batches/{size:03d}-events",
                f"a batch of {size} events in one message",
                events=[_event(kinds[i % 4], 1000 + size * 1000 + i) for i in range(size)],
            )
        )
    refused = [
        ("bad-signature", "signed with a key the receptor does not have", {"signing": "wrong-key"},
         "500 Client.SignatureMismatch", None),
        ("unsigned", "no Signature element", {"signing": "unsigned"}, "500 Client.UnsignedMessage", None),
        ("empty-signature", "an empty Signature element", {"signing": "empty"}, "500 Client.UnsignedMessage", None),
        ("deprecated-signature", "Signature DEPRECATED, as MTurk sent once the key was deleted",
         {"signing": "deprecated"}, "500 Client.UnsignedMessage", None),
        ("stale", "accepted as recorded (window off); refused once re-signed an hour old", {"stale": True},
         "200", "500 Client.StaleTimestamp"),
        ("wrong-version-element", "<Version> names 2006-10-31 inside the 2006-05-05 namespace",
         {"declared_version": "2006-10-31"}, "500 Client.VersionMismatch", None),
        ("wrong-version-soapaction", "SOAPAction names the 2006-10-31 WSDL, Notify is in 2006-05-05",
         {"soap_action": versions.wsdl_url("2006-10-31")}, "500 Client.VersionMismatch", None),
    ]  # fmt: skip
    for name, description, options, expect, expect_resigned in refused:
        fixtures.append(
            _fixture(
                f"refused/{name}",
                description,
                events=[_event("AssignmentAccepted", 5000 + len(fixtures))],
                expect=expect,
                expect_resigned=expect_resigned,
                **options,  # type: ignore[arg-type]
            )
        )
    return fixtures


def write(directory: Path, fixtures: Iterable[Fixture]) -> list[Path]:
    """Write each fixture to ``directory/<name>.http``; returns the paths."""
    written = []
    for fixture in fixtures:
        path = directory / f"{fixture.name}{SUFFIX}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fixture.render())
        written.append(path)
    return written


def main(argv: Sequence[str]) -> int:
    """``python -m soapreceptor.fixtures DIR``: (re)write the standard set into DIR."""
    if len(argv) != 1:
        print("usage: python -m soapreceptor.fixtures DIRECTORY", file=sys.stderr)
        return 2
    paths = write(Path(argv[0]), standard_set())
    print(f"wrote {len(paths)} fixtures to {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
