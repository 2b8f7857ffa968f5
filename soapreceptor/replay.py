"""``soapreceptor replay``: send recorded requests exactly as recorded, and check each answer.

The body goes out byte for byte and the headers as recorded (only the
request target is the receptor's own path). With ``--resign`` each message
first gets a fresh Timestamp and a new Signature under the replayer's secret
(see :meth:`soapreceptor.fixtures.Fixture.resigned`), so that recordings pass
a receptor's freshness window.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import sys
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

from . import wire
from .errors import ConfigError
from .fixtures import Expectation, Fixture, load
from .settings import is_http_url, require_http_url, required_signing_secret


@dataclass(frozen=True)
class Replayed:
    """One fixture's outcome: what came back, and whether it was what the fixture expects."""

    fixture: Fixture
    expected: Expectation
    status: int | None = None
    faultcode: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == self.expected.status and self.faultcode == self.expected.faultcode

    @property
    def got(self) -> str:
        if self.error is not None:
            return self.error
        return str(Expectation(self.status or 0, self.faultcode))

    def line(self) -> str:
        verdict = "ok  " if self.ok else "FAIL"
        detail = f"{self.got}" if self.ok else f"got {self.got}, expected {self.expected}"
        return f"{verdict} {self.fixture.name}: {detail}"


def send(url: str, fixture: Fixture, timeout: float = 30.0) -> tuple[int, bytes]:
    """Post ``fixture`` to ``url`` with its recorded headers and body; return status and answer body.

    Raises :class:`ValueError` unless ``url`` is an absolute http(s) URL:
    one without a host would otherwise be posted to the local machine.
    """
    if not is_http_url(url):
        raise ValueError(f"{url!r} is not an http(s) URL such as https://example.org/mturk")
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    # hostname is never None here (is_http_url checked it); the "" is for the type checker.
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.putrequest(fixture.method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in fixture.headers:
            if name.lower() != "content-length":
                connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(fixture.body)))
        connection.endheaders(fixture.body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def replay(url: str, fixture: Fixture, *, resign_secret: str | None = None, now: dt.datetime | None = None) -> Replayed:
    """Send one fixture (re-signed first if ``resign_secret`` is given) and judge the answer."""
    expected = fixture.expect
    if resign_secret is not None:
        fixture = fixture.resigned(resign_secret, now or dt.datetime.now(dt.UTC))
        expected = fixture.expect_resigned or fixture.expect
    try:
        status, body = send(url, fixture)
    except OSError as exc:
        return Replayed(fixture, expected, error=f"no answer: {exc}")
    try:
        faultcode, _faultstring = wire.read_answer(status, body)
    except ValueError as exc:
        return Replayed(fixture, expected, status=status, error=str(exc))
    return Replayed(fixture, expected, status=status, faultcode=faultcode)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the receptor's URL")
    parser.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="fixture files, or directories of *.http")
    parser.add_argument(
        "--resign",
        action="store_true",
        help="give each message a fresh Timestamp and sign it with --secret (or SOAPRECEPTOR_SECRET)",
    )
    parser.add_argument(
        "--secret",
        help="the key to re-sign with (default: SOAPRECEPTOR_SECRET, or the first of SOAPRECEPTOR_SECRET_FILE)",
    )


def command(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Replay every fixture named; one line each, a summary, exit 1 if any answer was not as expected."""
    try:
        require_http_url(args.url, "--url")
        fixtures = load(args.paths)
        secret = required_signing_secret(args.secret, "--resign") if args.resign else None
    except (ConfigError, ValueError) as exc:
        print(f"soapreceptor: {exc}", file=err)
        return 2
    failed = 0
    step = max(1, len(fixtures) // 10)
    for number, fixture in enumerate(fixtures, start=1):
        result = replay(args.url, fixture, resign_secret=secret)
        failed += not result.ok
        print(result.line(), file=out, flush=True)
        if len(fixtures) >= 50 and number % step == 0:
            print(f"... {number}/{len(fixtures)} replayed, {failed} not as expected", file=err, flush=True)
    # Not "N passed, N failed": CI logs read that shape as a test runner's verdict.
    print(f"replayed {len(fixtures)}: {len(fixtures) - failed} as expected, {failed} not", file=out)
    return 1 if failed else 0
