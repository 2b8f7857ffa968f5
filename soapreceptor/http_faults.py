"""gunicorn's own refusals, answered as SOAP faults like every other refusal.

gunicorn refuses some requests before the application sees them: a request
line or header over its limits (``limit_request_line``,
``limit_request_field_size``, ``limit_request_fields``), a request that is
not HTTP, a bad chunked body. It answers those with a small HTML page. A SOAP
client (and the person reading its log) expects a SOAP fault: the same
status and reason gunicorn chose, with a ``Client`` fault (``Server`` for a
5xx) whose ``faultstring`` says what gunicorn found wrong.

:func:`install` swaps gunicorn's error writer for :func:`write_fault`; the
receptor's gunicorn settings (:mod:`soapreceptor.gunicorn_config`) call it
in the master, so every worker forked from it answers this way. gunicorn's
choice of status and its log line stay as they are.
"""

from __future__ import annotations

import socket

from gunicorn import util

from . import errors, wire


def fault_for(status: int, reason: str, message: str) -> errors.NotifyFault:
    """The fault that tells a SOAP client why gunicorn refused its request with ``status``."""
    if status >= 500:
        return errors.ServerFault(
            f"the receptor's HTTP server failed to read the request ({status} {reason})"
            + (f": {message}" if message else "; its log says why")
        )
    detail = f": {message}" if message else ""
    return errors.ClientFault(
        f"the HTTP request was refused before it reached the SOAP service ({status} {reason}){detail}"
    )


def write_fault(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``: the same answer, as a SOAP 1.1 fault."""
    body = wire.render_fault(fault_for(status_int, reason, mesg))
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: text/xml; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    """Make gunicorn answer the requests it refuses itself with :func:`write_fault` (in this process and its forks)."""
    util.write_error = write_fault
