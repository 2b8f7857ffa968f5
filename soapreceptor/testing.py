"""A pytest plugin for testing your hook against a real receptor: fixtures ``receptor`` and ``gunicorn_receptor``.

Installed with soapreceptor (entry point ``pytest11``), so the fixtures are
there in every pytest run of an environment soapreceptor is installed in::

    import pytest
    from soapreceptor.sender import EventSpec

    import myapp.hooks


    @pytest.fixture
    def soapreceptor_hook():
        return myapp.hooks.on_event


    def test_submitted_assignment_is_handled(receptor):
        receptor.send(EventSpec("AssignmentSubmitted", "HITTYPE1", "HIT1", "ASSIGNMENT1"))
        receptor.wait_for_delivery()
        ...  # assert what your hook did

``receptor`` runs the real WSGI application (``create_app``) on a real HTTP
server on 127.0.0.1 (a free port) in a thread of the test process, with a
journal in the test's ``tmp_path`` and a dispatcher thread that hands each
journaled event to the hook. ``gunicorn_receptor`` runs the deployment
itself: gunicorn with soapreceptor's gunicorn settings and its embedded
dispatcher process. Both are stopped when the test ends.

Configure them by overriding these fixtures (in a test module or a conftest):

``soapreceptor_hook``
    the hook: a callable, or a ``"package.module:function"`` string. Default:
    ``soapreceptor_recorder``, which keeps every event it is handed.
``soapreceptor_secret``
    the secret the receptor checks signatures with (and its sender signs with).
``soapreceptor_retry_schedule``
    seconds before each retry of a failing hook. Default: ``(0.05, 0.1, 0.2)``,
    four attempts within a fraction of a second, so that a failing hook's event
    is ``dead`` quickly (production's default takes about 28 hours).
``soapreceptor_gunicorn_env``
    extra environment for the gunicorn server (your hook's own settings, or a
    ``SOAPRECEPTOR_*`` override such as ``SOAPRECEPTOR_WORKERS``).

Importing this module defines the fixtures and nothing else: the receptor's
modules are imported when a fixture is first used.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import pytest

# Imported with the package anyway; the sender (zeep, requests) and the WSGI
# app (spyne) are imported when a fixture first needs them.
from .dispatch import Dispatcher, RetryPolicy
from .errors import ConfigError
from .hooks import Hook, load_hook
from .journal import Journal, StoredEvent
from .model import Event
from .server import serve_command
from .settings import Settings
from .signature import Keyring

if TYPE_CHECKING:
    import requests

    from .sender import EventSpec, Sender, SendResult
    from .wsgi import ReceptorApp

__all__ = [
    "DEFAULT_TIMEOUT",
    "TEST_RETRY_SCHEDULE",
    "TEST_SECRET",
    "GunicornReceptor",
    "HookRecorder",
    "InProcessReceptor",
    "RunningReceptor",
]

#: The secret the fixtures' receptors check signatures with, unless ``soapreceptor_secret`` is overridden.
TEST_SECRET: Final[str] = "soapreceptor-test-secret"  # noqa: S105 (a test value, not a secret)
#: Seconds before each retry of a failing hook, unless ``soapreceptor_retry_schedule`` is overridden.
TEST_RETRY_SCHEDULE: Final[tuple[float, ...]] = (0.05, 0.1, 0.2)
#: How long a wait (for delivery, for a server to start or stop) may take before it fails; generous for slow CI.
DEFAULT_TIMEOUT: Final[float] = 60.0
_POLL: Final[float] = 0.02


class HookRecorder:
    """A hook that keeps every event it is handed, in order (the default ``soapreceptor_hook``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def __repr__(self) -> str:
        return f"<HookRecorder: {len(self.events)} events>"

    @property
    def events(self) -> list[Event]:
        """The events handed to the hook so far (a copy)."""
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


class RunningReceptor:
    """What the ``receptor`` and ``gunicorn_receptor`` fixtures give a test.

    ``url`` is where Notify is served, ``journal`` the receptor's journal
    (opened for the test's own thread), ``sender`` a :class:`~soapreceptor.sender.Sender`
    for ``url`` that signs with ``secret``.
    """

    def __init__(self, url: str, secret: str, journal_path: Path) -> None:
        import requests  # noqa: PLC0415 (imported on first use: see the top of the module)

        from .sender import Sender  # noqa: PLC0415

        self.url = url
        self.secret = secret
        self.journal_path = journal_path
        self._session: requests.Session = requests.Session()
        self.sender: Sender = Sender(url, secret, session=self._session)
        self._senders: dict[str, Sender] = {self.sender.version: self.sender}
        self.journal: Journal = Journal(journal_path).open()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    def send(self, *events: EventSpec | str, version: str | None = None, check: bool = True) -> SendResult:
        """Send one signed ``Notify`` call carrying ``events``; return the answer.

        Each event is an :class:`~soapreceptor.sender.EventSpec` or a string
        ``TYPE[:HITTypeId:HITId[:AssignmentId]]`` as ``soapreceptor send
        --event`` takes it. ``version`` is the notification version (default:
        the sender's). With ``check`` (the default) a refused call raises
        AssertionError. When this returns, the accepted events are in the journal.
        """
        from .sender import EventSpec, Sender  # noqa: PLC0415

        if not events:
            raise ValueError("send() needs at least one event")
        specs = [EventSpec.parse(event) if isinstance(event, str) else event for event in events]
        sender = self.sender
        if version is not None:
            if version not in self._senders:
                self._senders[version] = Sender(self.url, self.secret, version=version, session=self._session)
            sender = self._senders[version]
        result = sender.send(specs)
        if check and not result.accepted:
            raise AssertionError(f"the receptor at {self.url} refused the call: {result}")
        return result

    def events(self, state: str | None = None) -> list[StoredEvent]:
        """The journal's events in arrival order, optionally only those in ``state``.

        ``state`` is one of ``pending``, ``delivered``, ``dead``, ``duplicate``.
        """
        return self.journal.events(state)

    def wait_for_delivery(
        self, n: int | None = None, *, timeout: float = DEFAULT_TIMEOUT, allow_dead: bool = False
    ) -> list[StoredEvent]:
        """Wait until the hook has handled the events; return the delivered ones.

        With ``n`` None, wait until no event is pending, then fail if any is
        ``dead`` (the hook raised at each attempt) unless ``allow_dead``; with
        ``n``, wait until at least ``n`` events (counted since the receptor
        started) have been delivered. The hook has returned for every event
        reported delivered. Raises AssertionError, with the journal's counts
        and the hook's last errors, after ``timeout`` seconds or as soon as
        the hook has failed for good.
        """
        what = "every event to be delivered" if n is None else f"{n} delivered event(s)"
        deadline = time.monotonic() + timeout
        while True:
            self._check()
            counts = self.journal.counts()
            if n is not None and counts["delivered"] >= n:
                return self.events("delivered")
            if counts["pending"] == 0 and (n is None or counts["dead"]):
                if counts["dead"] and (n is not None or not allow_dead):
                    raise AssertionError(f"waiting for {what}, but the hook failed: {self._summary()}")
                if n is None:
                    return self.events("delivered")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: {self._summary()}")
            time.sleep(_POLL)

    def _summary(self) -> str:
        counts = self.journal.counts()
        summary = ", ".join(f"{state}={count}" for state, count in counts.items())
        failures = [
            f"\n  event {stored.id} {stored.event.event_type} ({stored.state}, {stored.attempts} attempt(s)):"
            f" {stored.last_error}"
            for stored in self.events()
            if stored.last_error and stored.state in ("pending", "dead")
        ]
        return f"the journal holds {summary}" + ("; the hook's last errors:" + "".join(failures) if failures else "")

    def _check(self) -> None:
        """Raise AssertionError if the receptor is no longer running."""

    def _close(self) -> None:
        self.journal.close()
        self._session.close()


class InProcessReceptor(RunningReceptor):
    """The ``receptor`` fixture: the WSGI app on a loopback HTTP server and a dispatcher, in threads of this process.

    ``app`` is the :class:`~soapreceptor.wsgi.ReceptorApp`, ``hook`` the
    callable events are handed to. The server answers one request at a time.
    The dispatcher thread delivers each event soon after it is journaled;
    ``SOAPRECEPTOR_HOOK_TIMEOUT`` is not enforced there (the time limit needs
    the main thread's signals), so a hook that hangs hangs its test: use
    ``wait_for_delivery``'s timeout.
    """

    def __init__(
        self,
        *,
        server: WSGIServer,
        app: ReceptorApp,
        dispatcher: Dispatcher,
        secret: str,
        journal_path: Path,
    ) -> None:
        super().__init__(app.settings.public_url, secret, journal_path)
        self.app = app
        self.hook = dispatcher.hook
        self._server = server
        self._dispatcher = dispatcher
        self._failures: list[str] = []
        self._reported = 0
        self._server_thread = threading.Thread(target=self._serve, name="soapreceptor-server", daemon=True)
        self._dispatcher_thread = threading.Thread(target=self._dispatch, name="soapreceptor-dispatcher", daemon=True)

    def _start(self) -> None:
        self._server_thread.start()
        self._dispatcher_thread.start()

    def _serve(self) -> None:
        try:
            self._server.serve_forever(poll_interval=0.05)
        except BaseException as exc:
            self._failures.append(f"the receptor's HTTP server failed: {type(exc).__name__}: {exc}")
        finally:
            # SQLite connections belong to the thread that opened them: this one's are closed here.
            self.app.receptor.journal.close()

    def _dispatch(self) -> None:
        try:
            self._dispatcher.run()
        except BaseException as exc:  # the hook raised something no dispatcher catches (pytest.fail, SystemExit)
            self._failures.append(f"the dispatcher thread died: {type(exc).__name__}: {exc}")
        finally:
            self._dispatcher.journal.close()

    def _check(self) -> None:
        if self._failures:
            self._reported = len(self._failures)
            raise AssertionError("; ".join(self._failures))

    def _stop(self) -> list[str]:
        """Stop the server, then the dispatcher (it finishes the event in hand); return what went wrong."""
        problems: list[str] = []
        if self._server_thread.is_alive():
            self._server.shutdown()
        self._server_thread.join(DEFAULT_TIMEOUT)
        self._server.server_close()
        self._dispatcher.stop()
        if self._dispatcher_thread.ident is not None:
            self._dispatcher_thread.join(DEFAULT_TIMEOUT)
        if self._server_thread.is_alive():
            problems.append(f"the receptor's HTTP server did not stop within {DEFAULT_TIMEOUT:g} s")
        if self._dispatcher_thread.is_alive():
            problems.append(
                f"the dispatcher did not stop within {DEFAULT_TIMEOUT:g} s: is the hook stuck in {self.hook!r}?"
            )
        self._close()
        return problems + self._failures[self._reported :]


class GunicornReceptor(RunningReceptor):
    """The ``gunicorn_receptor`` fixture: the deployment, gunicorn and its embedded dispatcher, in processes.

    ``process`` is the gunicorn master, ``hook`` the hook's name
    (``package.module:function``), ``log()`` what gunicorn, the workers and
    the dispatcher have logged so far.
    """

    def __init__(
        self, *, process: subprocess.Popen[bytes], log_file: Path, hook: str, secret: str, journal_path: Path, url: str
    ) -> None:
        super().__init__(url, secret, journal_path)
        self.process = process
        self.log_file = log_file
        self.hook = hook

    def log(self) -> str:
        """What the server has logged so far."""
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def _check(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}; its log:\n{self.log()}")

    def _summary(self) -> str:
        return f"{super()._summary()}\nthe server's log:\n{self.log()}"


# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def soapreceptor_secret() -> str:
    """The secret the receptor fixtures check signatures with (and their senders sign with).

    Override it to test with your own; any non-empty string does.
    """
    return TEST_SECRET


@pytest.fixture
def soapreceptor_recorder() -> HookRecorder:
    """A hook that keeps the events it is handed: ``soapreceptor_recorder.events``.

    It is the default ``soapreceptor_hook``, and works with ``receptor`` only
    (``gunicorn_receptor`` runs the hook in other processes).
    """
    return HookRecorder()


@pytest.fixture
def soapreceptor_hook(soapreceptor_recorder: HookRecorder) -> Hook | str:
    """The hook the receptor fixtures hand events to; override it to return yours.

    Return a callable (called with one :class:`soapreceptor.Event` per event)
    or its name, ``"package.module:function"``. ``gunicorn_receptor`` needs a
    hook it can import by name: a string, or a function defined at the top
    level of an importable module. Default: ``soapreceptor_recorder``.
    """
    return soapreceptor_recorder


@pytest.fixture
def soapreceptor_retry_schedule() -> tuple[float, ...]:
    """Seconds before each retry of a failing hook (``SOAPRECEPTOR_RETRY_SCHEDULE``).

    Default ``(0.05, 0.1, 0.2)``: four attempts, then the event is ``dead``,
    all within a second. ``()`` makes the first failure final.
    """
    return TEST_RETRY_SCHEDULE


@pytest.fixture
def soapreceptor_gunicorn_env() -> dict[str, str]:
    """Extra environment for ``gunicorn_receptor``'s server (default: none).

    The server inherits the test process's environment without its
    ``SOAPRECEPTOR_*`` variables; these are set on top, last, so they can
    also override the fixture's own ``SOAPRECEPTOR_*`` settings.
    """
    return {}


@pytest.fixture
def receptor(
    tmp_path: Path,
    soapreceptor_secret: str,
    soapreceptor_hook: Hook | str,
    soapreceptor_retry_schedule: tuple[float, ...],
) -> Iterator[InProcessReceptor]:
    """A receptor in this process: the real WSGI app on 127.0.0.1 (a free port), dispatching to ``soapreceptor_hook``.

    Gives ``url``, ``journal``, ``sender``, ``send(*events)``,
    ``wait_for_delivery(n=None, timeout=60)`` and ``events(state=None)``.
    The server and the dispatcher run in threads, stopped when the test ends.
    The journal is ``tmp_path / "soapreceptor" / "journal.db"``. No hook time
    limit applies (it needs the main thread).
    """
    with warnings.catch_warnings():
        # spyne (imported here, not with the plugin) uses modules Python has deprecated,
        # which a suite run with warnings as errors would otherwise fail on.
        warnings.filterwarnings("ignore", "'cgi' is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="spyne")
        from .wsgi import create_app  # noqa: PLC0415

    class QuietHandler(WSGIRequestHandler):
        timeout = DEFAULT_TIMEOUT  # a client that never finishes its request cannot hold the server (or teardown)

        def log_message(self, format: str, *args: object) -> None:
            """The app logs each request itself (logger ``soapreceptor.access``)."""

    hook = load_hook(soapreceptor_hook) if isinstance(soapreceptor_hook, str) else soapreceptor_hook
    workdir = tmp_path / "soapreceptor"
    workdir.mkdir(exist_ok=True)
    journal_path = workdir / "journal.db"
    server = WSGIServer(("127.0.0.1", 0), QuietHandler)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        settings = Settings(
            keyring=Keyring([soapreceptor_secret]),
            hook=hook,
            public_url=url,
            journal=str(journal_path),
            retry_schedule=tuple(soapreceptor_retry_schedule),
            dispatcher="off",
        )
        app = create_app(settings)
        # create_app opened the journal in this thread; the server thread opens (and closes) its own.
        app.receptor.journal.close()
        server.set_app(app)
        dispatcher = Dispatcher(
            journal=Journal(journal_path, durable=False),
            hook=hook,
            retry=RetryPolicy(settings.retry_schedule),
            hook_timeout=settings.hook_timeout,
            idle_wait=_POLL,
        )
        running = InProcessReceptor(
            server=server, app=app, dispatcher=dispatcher, secret=soapreceptor_secret, journal_path=journal_path
        )
    except BaseException:
        server.server_close()
        raise
    running._start()
    try:
        yield running
    finally:
        problems = running._stop()
    if problems:
        pytest.fail("the receptor fixture did not end cleanly: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def gunicorn_receptor(
    tmp_path: Path,
    soapreceptor_secret: str,
    soapreceptor_hook: Hook | str,
    soapreceptor_retry_schedule: tuple[float, ...],
    soapreceptor_gunicorn_env: dict[str, str],
) -> Iterator[GunicornReceptor]:
    """The deployment: gunicorn (1 worker) with its embedded dispatcher on 127.0.0.1 (a free port).

    The same API as ``receptor``, plus ``process`` and ``log()``. The hook
    runs in the dispatcher process, so ``soapreceptor_hook`` must name it
    (``"package.module:function"``, or a top-level function of an importable
    module); the server gets this process's ``sys.path`` in ``PYTHONPATH``.
    Stopped with SIGTERM when the test ends (killed if it takes over 60 s).
    """
    hook = _hook_name(soapreceptor_hook)
    workdir = tmp_path / "soapreceptor-gunicorn"
    workdir.mkdir(exist_ok=True)
    journal_path = workdir / "journal.db"
    log_file = workdir / "server.log"
    env = {name: value for name, value in os.environ.items() if not name.startswith("SOAPRECEPTOR_")}
    env.update(
        {
            "PYTHONPATH": _python_path(env.get("PYTHONPATH", "")),
            "SOAPRECEPTOR_BIND": "127.0.0.1:0",
            "SOAPRECEPTOR_WORKERS": "1",
            "SOAPRECEPTOR_SECRET": soapreceptor_secret,
            "SOAPRECEPTOR_JOURNAL": str(journal_path),
            "SOAPRECEPTOR_HOOK": hook,
            "SOAPRECEPTOR_RETRY_SCHEDULE": ",".join(f"{delay:g}" for delay in soapreceptor_retry_schedule),
        }
    )
    env.update(soapreceptor_gunicorn_env)
    command = serve_command()
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)  # noqa: S603
    running: GunicornReceptor | None = None
    try:
        address = _wait_for_gunicorn(process, log_file)
        running = GunicornReceptor(
            process=process,
            log_file=log_file,
            hook=hook,
            secret=soapreceptor_secret,
            journal_path=journal_path,
            url=f"http://{address}/",
        )
        yield running
    finally:
        if running is not None:
            running._close()
        _stop_process(process)


# -- helpers --------------------------------------------------------------------


def _hook_name(hook: Hook | str) -> str:
    """The ``package.module:function`` name gunicorn can load ``hook`` by."""
    if isinstance(hook, str):
        return hook
    module = getattr(hook, "__module__", None)
    qualname = getattr(hook, "__qualname__", None)
    if module and qualname and module != "__main__" and "<" not in qualname:
        name = f"{module}:{qualname}"
        try:
            if load_hook(name) is hook:
                return name
        except ConfigError:
            pass
    pytest.fail(
        f"gunicorn_receptor runs the hook in another process, which loads it by name, but {hook!r} has no name"
        " it can be imported by: override soapreceptor_hook to return 'package.module:function'",
        pytrace=False,
    )


def _python_path(inherited: str) -> str:
    """This process's own ``sys.path`` entries (not the interpreter's), then ``inherited``: what the server imports."""
    paths = sysconfig.get_paths()
    system = [Path(paths[key]) for key in ("stdlib", "platstdlib") if key in paths]
    site_dirs = {Path(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    site_dirs |= {Path(paths[key]) for key in ("purelib", "platlib") if key in paths}
    entries: list[str] = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        path = Path(entry).resolve()
        if path in site_dirs or any(path.is_relative_to(root) for root in system):
            continue
        entries.append(str(path))
    entries += [entry for entry in inherited.split(os.pathsep) if entry]
    return os.pathsep.join(dict.fromkeys(entries))


def _poll(predicate: Callable[[], str | bool | None], what: str, timeout: float = DEFAULT_TIMEOUT) -> str | bool:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(_POLL)


def _wait_for_gunicorn(process: subprocess.Popen[bytes], log_file: Path) -> str:
    """Wait until gunicorn listens and answers /healthz; return its ``host:port``."""

    def log() -> str:
        return log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""

    def alive() -> None:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode} at start; its log:\n{log()}")

    def listening() -> str | None:
        alive()
        match = re.search(r"Listening at: http://([\d.]+:\d+)", log())
        return match.group(1) if match else None

    address = str(_poll(listening, "gunicorn to listen"))

    def healthy() -> bool:
        alive()
        host, _, port = address.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=DEFAULT_TIMEOUT)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    _poll(healthy, "the receptor to answer /healthz")
    return address


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn stops its workers and its dispatcher), then SIGKILL after the deadline."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=DEFAULT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=DEFAULT_TIMEOUT)
