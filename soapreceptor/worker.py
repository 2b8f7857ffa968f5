"""soapreceptor's gunicorn worker: gthread, but a thread stays with a kept-alive connection that is still busy.

gthread hands a kept-alive connection back to its main thread after every
answer: the main thread registers it with its poller, wakes when the next
request arrives, unregisters it and hands it to a pool thread again. That is
two hand-offs between threads and a round of poller calls per request. A
Notify call is short work around one wait (the fsync of its journal commit),
and while a worker's threads wait on the disk those hand-offs turn into
sleeps and wake-ups. Without them soapreceptor answered 5 to 11 % more
messages a second at full speed (issue 8; medians of alternating rounds
beside plain gthread, 10-event messages).

So a thread that has answered on a kept-alive connection waits up to
:attr:`ThreadWorker.linger` (1 ms) for the next request on it, and serves it
itself. It lets the connection go back to the poller, as gthread does:

- when the next request does not come within the linger, so that an idle
  connection never holds a thread for longer than that;
- without waiting, when the last waits on that connection went unanswered
  (:class:`Lingering`): a client that pauses between its requests would
  make each answer pay for a wait and a wake-up that serve nothing (at half
  of peak, waiting after every answer took soapreceptor's p99 latency from
  13 to 20 ms in a side-by-side run);
- when another connection is waiting for a thread, so that a busy client
  cannot keep a thread from the others;
- when the worker is stopping, or the connection is not HTTP/1.x.

And it reads each of its settings once (:class:`SettledConfig`), where
gunicorn looks each up again every time, two dozen times a request.

Everything else (accepting, keep-alive limits and timeouts, graceful stop,
HTTP/2) is gthread's own.
"""

from __future__ import annotations

import select
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from gunicorn.http import message
from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker as GthreadWorker

#: Most answers on a connection after which its thread lets it go without waiting (see Lingering).
MAX_SKIP: Final[int] = 64


@dataclass(slots=True)
class Lingering:
    """Whether to wait for a connection's next request: after a wait that went unanswered, not for a while.

    Like a lock that spins before it sleeps only where spinning paid off
    before: after an unanswered wait, the next wait comes only after one
    answer without; after each further unanswered wait, twice as many
    answers pass without one (at most :data:`MAX_SKIP`); an answered wait
    starts the count again. A busy connection, whose next request nearly
    always comes within the linger, is waited for nearly always; one that
    pauses between its requests, about once in MAX_SKIP answers.
    """

    #: Answers still to go before the next wait.
    skip: int = 0
    #: Answers to go without a wait after the next wait that goes unanswered.
    penalty: int = 1

    def wait_now(self) -> bool:
        """Whether to wait after this answer (counts it if not)."""
        if self.skip:
            self.skip -= 1
            return False
        return True

    def waited(self, answered: bool) -> None:
        """Take the outcome of a wait: whether the next request came within it."""
        if answered:
            self.penalty = 1
        else:
            self.skip, self.penalty = self.penalty, min(2 * self.penalty, MAX_SKIP)


class SettledConfig:
    """A worker's gunicorn settings, each looked up once: then a plain attribute.

    gunicorn's ``Config`` finds a setting by name on every read (its
    ``__getattr__``, then the setting's ``get``), and its HTTP parser and
    response read settings that way two dozen times a request. A worker's
    settings never change (a reload starts new workers), so the first read
    of each is kept on this object and the next ones are ordinary attribute
    reads. In two side-by-side runs (10-event messages, full speed, 6
    alternating rounds each) it took soapreceptor's worker CPU down by about
    30 µs a message, 6 %, and its rate up by 2 and 6 %; the bare limit, with
    less of its own to do, gained 14 and 16 %.

    Everything else (unknown names, methods, properties) is the wrapped
    ``Config``'s own.
    """

    def __init__(self, config: Any) -> None:
        object.__setattr__(self, "_config", config)

    def __getattr__(self, name: str) -> Any:
        # Only called for a name not read yet: after this it is in the instance's __dict__.
        value = getattr(self._config, name)
        object.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a worker's settings are read-only (tried to set {name})")


def http_parser(config: Any) -> str:
    """Which HTTP parser gunicorn reads requests with under ``config`` (a gunicorn ``Config``), in words.

    gunicorn 25 and later take their C parser, gunicorn_h1c (soapreceptor's
    ``fast`` extra), wherever it is installed and no setting rules it out
    (``http_parser``: ``auto``); else their Python one. gunicorn's own check
    decides here (a private function: where a later gunicorn has none, this
    says so rather than guess).
    """
    try:
        fast = bool(message._check_fast_parser(config))  # gunicorn's own decision (see above)
    except AttributeError:
        return "an HTTP parser this gunicorn does not name"
    except RuntimeError as exc:  # http_parser = "fast" where it cannot be
        return f"no HTTP parser: {exc}"
    if not fast:
        return "its Python HTTP parser"
    version = getattr(message._fast_parser_module, "__version__", "?")
    return f"its C HTTP parser (gunicorn_h1c {version})"


class ThreadWorker(GthreadWorker):
    """gthread, with a thread serving a kept-alive connection's next request itself when it comes at once."""

    #: Seconds a thread waits for the next request on the connection it has just answered on.
    #: Long enough for a client that sends its next request as soon as it has the answer
    #: (a load generator, a proxy's busy upstream connection), short enough that waiting on
    #: an idle one costs little: a thread held for a millisecond, now and then (see Lingering).
    linger: ClassVar[float] = 0.001

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cfg = SettledConfig(self.cfg)  # type: ignore[has-type]  # gunicorn has no type hints
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
        lingering = conn.__dict__.get("soapreceptor_lingering")
        if lingering is None:
            lingering = conn.soapreceptor_lingering = Lingering()
        if not lingering.wait_now():
            return False
        poller = select.poll()  # not select.select: a descriptor may be above FD_SETSIZE
        poller.register(conn.sock, select.POLLIN)
        # Readable also when the client has closed: serving then finds no request and ends.
        answered = bool(poller.poll(self.linger * 1000))
        lingering.waited(answered)
        return answered
