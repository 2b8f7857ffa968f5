"""A WSGI application and worker classes for tests/test_worker.py, run by a real gunicorn.

Each answer tells how many hand-offs the worker has made so far on its connection: how many
times a pool thread gave a connection it kept alive back to the main
thread's poller (gthread's ``finish_request``), rather than serving its
next request itself. Only the hand-offs of the connection the request came
on are counted (by the client's address and port), so that other
connections (the test harness's own health checks) cannot blur a count.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.workers.gthread import ThreadWorker as GthreadWorker

from soapreceptor.worker import ThreadWorker

#: Hand-offs so far, by the client's (address, port): the worker's main thread counts, the application reads.
_handoffs: Counter[tuple[str, int]] = Counter()


class _Counting:
    def finish_request(self, conn: Any, fs: Any) -> None:
        if not fs.cancelled() and fs.result() is True:
            _handoffs[(conn.client[0], int(conn.client[1]))] += 1
        super().finish_request(conn, fs)  # type: ignore[misc]


class CountingWorker(_Counting, ThreadWorker):
    """soapreceptor's worker as shipped, counting hand-offs."""


class PatientWorker(_Counting, ThreadWorker):
    """soapreceptor's worker, waiting a minute for a connection's next request: what it does then shows."""

    linger = 60.0


class CountingGthreadWorker(_Counting, GthreadWorker):
    """Plain gthread, counting hand-offs: what soapreceptor's worker changes."""


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answers every request with the hand-offs so far, as JSON."""
    environ["wsgi.input"].read()
    body = json.dumps({"handoffs": _handoffs[(environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"]))]}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]
