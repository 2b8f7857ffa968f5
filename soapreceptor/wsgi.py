"""The WSGI application: ``soapreceptor.wsgi:application`` for gunicorn, :func:`create_app` for everyone else.

One URL (the path of ``SOAPRECEPTOR_PUBLIC_URL``) serves all of it: ``POST``
is a ``Notify`` call for any supported version, ``GET ?wsdl`` the contract
(``?wsdl&version=V`` for another version than the default). ``/healthz``
answers liveness probes. Everything else gets a SOAP fault that says where
to go instead. Every request is logged in one line with a request id, which
the answer carries in ``X-Request-Id``.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from . import errors, gate, metrics, versions, wire
from .errors import ConfigError
from .hooks import load_hook
from .journal import Arrival, Journal, JournalError
from .model import Notification
from .policy import Policy
from .receptor import Clock, Receptor, utc_now
from .service import ENVIRON_KEY, NotifyServer, build_application, build_wsdl
from .settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["ReceptorApp", "create_app"]

access_log = logging.getLogger("soapreceptor.access")

_OPERATIONAL = ("/healthz", "/readyz", "/metrics")


class ReceptorApp:
    """The receptor as a WSGI callable. Build it with :func:`create_app`."""

    def __init__(self, settings: Settings, receptor: Receptor) -> None:
        self.settings = settings
        self.receptor = receptor
        self.path = settings.path
        # Built once, here: under gunicorn's preload_app that is before the
        # workers fork, with the configured public URL (spyne would otherwise
        # take the Host of the first ?wsdl request and cache it per worker).
        self.wsdls: dict[str, bytes] = {v: build_wsdl(v, settings.public_url) for v in versions.VERSIONS}
        self.soap = NotifyServer(
            build_application(versions.DEFAULT_VERSION, handler=self._handle),
            self._handle,
            # The gate enforces the cap; spyne's own (2 MiB by default) must never be the lower one.
            max_content_length=settings.max_body + 1,
        )

    def _handle(self, notification: Notification, body: bytes, environ: dict[str, Any]) -> None:
        info = environ.setdefault(ENVIRON_KEY, {})
        info["version"] = notification.version
        info["events"] = len(notification.events)
        arrival = Arrival(
            body=body,
            request_id=info.get("request_id"),
            remote_addr=environ.get("REMOTE_ADDR"),
            soap_action=environ.get("HTTP_SOAPACTION"),
        )
        self.receptor.handle(notification, arrival)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        # 64 random bits, as hex: what uuid4().hex[:16] gave, without building a UUID per request.
        request_id = os.urandom(8).hex()
        info: dict[str, Any] = {"request_id": request_id}
        environ[ENVIRON_KEY] = info
        status_seen: list[str] = []

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            status_seen.append(status)
            return start_response(status, [*headers, ("X-Request-Id", request_id)], exc_info)

        try:
            body = list(self._route(environ, respond))
        except Exception:
            # Nothing may escape as a traceback page or kill the worker.
            access_log.exception("request %s: unhandled error", request_id)
            fault = errors.ServerFault(
                f"internal error; the receptor's log has the details under request id {request_id}"
            )
            info.pop("outcome", None)
            body = [self._fault_response(info, respond, "500 Internal Server Error", fault, exc_info=sys.exc_info())]
        fields = {
            "request_id": request_id,
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": status_seen[-1].split(" ", 1)[0] if status_seen else "-",
            "version": info.get("version", "-"),
            "events": info.get("events", "-"),
            "outcome": info.get("outcome", "-"),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if info.get("notify"):
            metrics.get().messages_received.inc()
            if fields["outcome"] == "accepted":
                metrics.get().messages_accepted.labels(fields["version"]).inc()
            else:
                metrics.get().messages_refused.labels(fields["outcome"]).inc()
        # One line per request; SOAPRECEPTOR_LOG_FORMAT=json logs the same fields as JSON.
        access_log.info(" ".join(f"{key}={value}" for key, value in fields.items()), extra={"fields": fields})
        return body

    def _route(self, environ: WSGIEnvironment, respond: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO") or "/"
        info = environ[ENVIRON_KEY]
        if path in _OPERATIONAL and path != self.path:
            if method not in ("GET", "HEAD"):
                return self._not_allowed(info, respond, "GET, HEAD", f"{path} answers GET only")
            status, content_type, text = self._operational(path)
            info["outcome"] = path.lstrip("/")
            respond(status, [("Content-Type", content_type), ("Content-Length", str(len(text)))])
            return [b"" if method == "HEAD" else text]
        if path != self.path:
            fault = errors.ClientFault(f"no service at {path}; Notify is served at {self.path}")
            return [self._fault_response(info, respond, "404 Not Found", fault)]
        if method == "POST":
            info["notify"] = True
            try:
                gate.check_media_type(environ.get("CONTENT_TYPE"))
                body = gate.read_body(environ["wsgi.input"], environ.get("CONTENT_LENGTH"), self.settings.max_body)
                gate.check_body(body)
            except gate.Refused as refusal:
                return [self._fault_response(info, respond, refusal.status, refusal)]
            # spyne reads the body again from here: exactly the bytes the gate let in.
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            # Straight to the Notify call: routing is done, so spyne's own (the request
            # URL rebuilt, a ?wsdl check) has nothing left to decide.
            answer: Iterable[bytes] = self.soap.handle_rpc(environ, respond)
            return answer
        if method in ("GET", "HEAD"):
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            if any(key.lower() == "wsdl" for key in query):
                return self._wsdl(info, respond, query, method)
            return self._not_allowed(
                info,
                respond,
                "POST, GET",
                f"{self.path} is a SOAP endpoint: POST a Notify call, or GET {self.path}?wsdl for its contract",
            )
        return self._not_allowed(info, respond, "POST, GET", f"{method} is not supported; POST a Notify call")

    def _operational(self, path: str) -> tuple[str, str, bytes]:
        """``/healthz`` (the process answers), ``/readyz`` (it can do its job), ``/metrics``."""
        if path == "/healthz":
            return "200 OK", "text/plain; charset=utf-8", b"ok\n"
        if path == "/metrics":
            content_type, text = metrics.render(self.receptor.journal)
            return "200 OK", content_type, text
        problems = self._readiness_problems()
        if problems:
            return "503 Service Unavailable", "text/plain; charset=utf-8", ("\n".join(problems) + "\n").encode()
        return "200 OK", "text/plain; charset=utf-8", b"ready\n"

    def _readiness_problems(self) -> list[str]:
        journal = self.receptor.journal
        problems = []
        try:
            journal.check_accepting()
        except JournalError as exc:
            return [f"accepted messages cannot be stored: {exc}"]
        try:
            last_beat = journal.last_heartbeat()
        except JournalError as exc:
            return [f"the journal cannot be read: {exc}"]
        # A dispatcher beats every few seconds, except while a hook call runs.
        silence = max(30.0, 2 * self.settings.hook_timeout + 10)
        if last_beat is None:
            problems.append("no dispatcher has run on this journal yet (SOAPRECEPTOR_DISPATCHER=off: start one)")
        elif time.time() - last_beat > silence:
            problems.append(f"no dispatcher has been seen for {time.time() - last_beat:.0f} s (limit {silence:.0f} s)")
        return problems

    def _wsdl(
        self, info: dict[str, Any], respond: StartResponse, query: dict[str, list[str]], method: str
    ) -> Iterable[bytes]:
        version = (query.get("version") or [versions.DEFAULT_VERSION])[0]
        document = self.wsdls.get(version)
        if document is None:
            fault = errors.UnknownVersion(
                f"no WSDL for version {version!r}; use ?wsdl&version= with one of {', '.join(versions.VERSIONS)}"
            )
            return [self._fault_response(info, respond, "404 Not Found", fault)]
        info["outcome"] = f"wsdl {version}"
        respond("200 OK", [("Content-Type", wire.CONTENT_TYPE), ("Content-Length", str(len(document)))])
        return [b"" if method == "HEAD" else document]

    def _not_allowed(self, info: dict[str, Any], respond: StartResponse, allow: str, message: str) -> Iterable[bytes]:
        fault = errors.ClientFault(message)
        return [self._fault_response(info, respond, "405 Method Not Allowed", fault, extra=[("Allow", allow)])]

    @staticmethod
    def _fault_response(
        info: dict[str, Any],
        respond: StartResponse,
        status: str,
        fault: errors.NotifyFault,
        *,
        extra: list[tuple[str, str]] | None = None,
        exc_info: Any = None,
    ) -> bytes:
        info["outcome"] = fault.faultcode
        body = wire.render_fault(fault)
        headers = [("Content-Type", wire.CONTENT_TYPE), ("Content-Length", str(len(body))), *(extra or [])]
        respond(status, headers, exc_info) if exc_info else respond(status, headers)
        return body


def create_app(settings: Settings | None = None, *, clock: Clock = utc_now) -> ReceptorApp:
    """Build the receptor's WSGI application from ``settings`` (default: from the environment).

    Raises :class:`~soapreceptor.errors.ConfigError` if the settings are
    unusable or the hook cannot be imported: a receptor that would fail
    at its first request must not start.
    """
    settings = Settings.from_env() if settings is None else settings
    settings.require_secret()
    # The hook runs in the dispatcher, but a hook that cannot be loaded must
    # stop the receptor now, not be found out at the first event.
    if isinstance(settings.hook, str):
        load_hook(settings.hook)
    policy = Policy(
        keyring=settings.keyring,
        tolerance=settings.timestamp_tolerance,
        accept_unsigned=settings.accept_unsigned,
    )
    try:
        journal = Journal(settings.journal).open()
    except JournalError as exc:
        raise ConfigError(f"SOAPRECEPTOR_JOURNAL={settings.journal!r}: {exc}") from None
    return ReceptorApp(settings, Receptor(policy=policy, journal=journal, clock=clock))


def __getattr__(name: str) -> ReceptorApp:
    # ``soapreceptor.wsgi:application`` is built on first access, from the
    # environment, so that importing this module (for create_app) needs no
    # settings. gunicorn's preload_app makes that first access happen once,
    # in the master, before the workers fork.
    if name == "application":
        try:
            app = create_app()
        except ConfigError as exc:
            raise SystemExit(f"soapreceptor: {exc}") from None
        globals()["application"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
