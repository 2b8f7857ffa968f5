"""The Notify fast lane (NotifyServer.handle_rpc) answers exactly as spyne's generic request path does.

Both serve the same spyne Application (build_application with the same
handler): the generic path through spyne's method context, NotifyProtocol and
the @rpc operation; the fast lane straight from the wire reader to the
operation. Every recorded fixture and every hostile body must get the same
status, headers and bytes from both, whatever the handler does with it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from spyne.server.wsgi import WsgiApplication

from soapreceptor import errors, fixtures, versions
from soapreceptor.model import Notification
from soapreceptor.service import ENVIRON_KEY, NotifyServer, build_application

from .adversarial.test_hostile_inputs import CASES
from .support import REPO

Handler = Callable[[Notification, bytes, dict[str, Any]], None]

FIXTURES = fixtures.load([REPO / "tests" / "fixtures"])
# Hostile bodies the gate lets through or refuses: here they go straight to the service (the
# gate's size cap is not the service's business, so the multi-megabyte ones are left out).
HOSTILE = [case for case in CASES if case.body is not None and case.name not in ("body-10-mib", "events-100000")]


def accept(notification: Notification, body: bytes, environ: dict[str, Any]) -> None:
    environ[ENVIRON_KEY]["taken"] = len(notification.events)


def refuse(notification: Notification, body: bytes, environ: dict[str, Any]) -> None:
    raise errors.SignatureMismatch("the signature does not match (from the test's handler)")


def crash(notification: Notification, body: bytes, environ: dict[str, Any]) -> None:
    raise RuntimeError("a bug in the handler")


def call(app: Callable[..., Iterable[bytes]], body: bytes, headers: dict[str, str]) -> tuple[Any, ...]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "text/xml; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        ENVIRON_KEY: {"request_id": "0123456789abcdef"},
    }
    environ.update({f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()})
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, response_headers))
        return lambda data: None

    answer = b"".join(app(environ, start_response))
    status, response_headers = started[-1]
    return status, sorted(response_headers), answer, dict(environ[ENVIRON_KEY])


def both(handler: Handler) -> tuple[WsgiApplication, NotifyServer]:
    generic = WsgiApplication(build_application(versions.DEFAULT_VERSION, handler=handler))
    fast = NotifyServer(build_application(versions.DEFAULT_VERSION, handler=handler), handler)
    return generic, fast


@pytest.mark.parametrize("handler", [accept, refuse, crash])
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_fast_lane_answers_every_fixture_as_spyne_does(fixture: fixtures.Fixture, handler: Handler) -> None:
    generic, fast = both(handler)
    headers = {name: value for name, value in fixture.headers if name.lower() == "soapaction"}
    assert call(fast, fixture.body, headers) == call(generic, fixture.body, headers)


@pytest.mark.parametrize("case", HOSTILE, ids=[case.name for case in HOSTILE])
def test_fast_lane_refuses_every_hostile_body_as_spyne_does(case: Any) -> None:
    generic, fast = both(accept)
    body = case.body()
    headers = {"SOAPAction": '""'}
    assert call(fast, body, headers) == call(generic, body, headers)


def test_the_comparison_can_fail() -> None:
    """The two paths are told apart when they differ: an accepted and a refused message differ."""
    _, fast = both(accept)
    _, refusing = both(refuse)
    body = FIXTURES[0].body
    assert call(fast, body, {}) != call(refusing, body, {})
