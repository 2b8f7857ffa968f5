"""soapreceptor's gunicorn worker: gthread, but a thread stays with a kept-alive connection that is still busy.

gthread hands a kept-alive connection back to its main thread after every
answer: the main thread registers it with its poller, wakes when the next
request arrives, unregisters it and hands it to a pool thread again. That is
two hand-offs between threads and a round of poller calls per request. A
Notify call is short work around one wait (the fsync of its journal commit),
and while a worker's threads wait on the disk those hand-offs turn into
sleeps and wake-ups: under load they took about a seventh of soapreceptor's
throughput (issue 8, measured side by side with plain gthread).

So a thread that has answered on a kept-alive connection waits up to
:attr:`ThreadWorker.linger` (1 ms) for the next request on it, and serves it
itself. It lets the connection go back to the poller, as gthread does:

- when the next request does not come within the linger, so that an idle
  connection never holds a thread for longer than that;
- when another connection is waiting for a thread, so that a busy client
  cannot keep a thread from the others;
- when the worker is stopping, or the connection is not HTTP/1.x.

Everything else (accepting, keep-alive limits and timeouts, graceful stop,
HTTP/2) is gthread's own.
"""

from __future__ import annotations

import select
import threading
from typing import Any, ClassVar

from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker as GthreadWorker


class ThreadWorker(GthreadWorker):
    """gthread, with a thread serving a kept-alive connection's next request itself when it comes at once."""

    #: Seconds a thread waits for the next request on the connection it has just answered on.
    #: Long enough for a client that sends its next request as soon as it has the answer
    #: (a load generator, a proxy's busy upstream connection), short enough that an idle
    #: connection costs nothing.
    linger: ClassVar[float] = 0.001

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting_lock = threading.Lock()
        #: Connections handed to the thread pool that no thread has taken yet.
        self._waiting = 0

    def enqueue_req(self, conn: TConn) -> None:
        with self._waiting_lock:
            self._waiting += 1
        try:
            super().enqueue_req(conn)
        except BaseException:
            with self._waiting_lock:
                self._waiting -= 1
            raise

    def handle(self, conn: TConn) -> Any:
        """Serve ``conn``'s request, then each next one that comes at once; what gthread's ``handle`` returns."""
        with self._waiting_lock:
            self._waiting -= 1
        result = super().handle(conn)
        while result is True and self._next_request_comes(conn):
            result = super().handle(conn)
        return result

    def _next_request_comes(self, conn: TConn) -> bool:
        if not self.alive or conn.is_http2 or self._waiting:
            return False
        if conn.parser.unreader.buf.getvalue():
            return True  # a body drain read ahead into the next request: it is here already
        poller = select.poll()  # not select.select: a descriptor may be above FD_SETSIZE
        poller.register(conn.sock, select.POLLIN)
        # Readable also when the client has closed: serving then finds no request and ends.
        return bool(poller.poll(self.linger * 1000))
