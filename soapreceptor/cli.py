"""The ``soapreceptor`` command: serve, dispatch, send, replay, simulate, wsdl; the journal's events, redeliver, purge.

Exit status: 0 success; 1 the receptor refused a message; 2 bad arguments,
settings or ids; 3 the receptor (or the journal) could not be reached.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import errno
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gunicorn.util import parse_address

from . import __version__, replay, simulate, versions
from .contract import wsdl_path, wsdl_with_address
from .dispatch import Dispatcher, RetryPolicy, supervise
from .errors import ConfigError, SendError
from .hooks import load_hook
from .journal import STATES, Journal, JournalError, StoredEvent
from .model import EventType
from .sender import VERSION_PLACES, EventSpec, Sender
from .server import serve_command
from .settings import Settings, bind_problem, require_http_url, required_signing_secret
from .signature import DEPRECATED
from .timestamps import format_timestamp
from .wsgi import create_app

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except ConfigError as exc:
        print(f"soapreceptor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalError as exc:
        print(f"soapreceptor: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soapreceptor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"soapreceptor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the receptor under gunicorn (settings from SOAPRECEPTOR_*)")
    serve.add_argument("--bind", help="host:port or unix:PATH (default: SOAPRECEPTOR_BIND or 127.0.0.1:8080)")
    serve.add_argument(
        "--workers", type=int, help="gunicorn worker processes (default: SOAPRECEPTOR_WORKERS or one per CPU)"
    )
    serve.add_argument(
        "--demo", action="store_true", help="also send a short demo HIT life cycle once the server is up"
    )
    serve.set_defaults(run=_serve)

    dispatch = commands.add_parser("dispatch", help="deliver journaled events to the hook (runs until stopped)")
    dispatch.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # set by the embedded dispatcher
    dispatch.add_argument(
        "--nice", type=int, default=0, metavar="N", help="lower the dispatcher's CPU priority by N (as nice(1))"
    )
    dispatch.add_argument(
        "--idle",
        action="store_true",
        help="run only on CPU time nothing else wants (Linux SCHED_IDLE; elsewhere the lowest nice)",
    )
    dispatch.set_defaults(run=_dispatch)

    events = commands.add_parser("events", help="list the events in the journal")
    events.add_argument("--state", choices=STATES, help="only events in this state")
    events.add_argument("--limit", type=int, help="at most this many events")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(run=_events)

    redeliver = commands.add_parser("redeliver", help="put delivered or dead events back in line for the hook")
    redeliver.add_argument("ids", nargs="*", type=int, metavar="ID", help="event ids (see `soapreceptor events`)")
    redeliver.add_argument("--dead", action="store_true", help="every dead event")
    redeliver.set_defaults(run=_redeliver)

    purge = commands.add_parser("purge", help="delete delivered events older than a duration")
    purge.add_argument("--delivered", action="store_true", required=True, help="required: only delivered events go")
    purge.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 30d, 12h, 90m, 45s")
    purge.set_defaults(run=_purge)

    replay_parser = commands.add_parser("replay", help="send recorded fixtures as recorded and check each answer")
    replay.add_arguments(replay_parser)
    replay_parser.set_defaults(run=replay.command)

    simulate_parser = commands.add_parser("simulate", help="play realistic HIT life cycles against a receptor")
    simulate.add_arguments(simulate_parser)
    simulate_parser.set_defaults(run=simulate.command)

    send = commands.add_parser("send", help="send one signed Notify call, built with zeep from wsdl/")
    send.add_argument("--url", required=True, help="the receptor's URL")
    send.add_argument(
        "--event",
        action="append",
        required=True,
        metavar="TYPE[:HITTypeId:HITId[:AssignmentId]]",
        help="an event to send; repeat for several events in one message",
    )
    send.add_argument(
        "--version",
        dest="notification_version",
        default=versions.DEFAULT_VERSION,
        choices=versions.VERSIONS,
        help="notification API version (default %(default)s)",
    )
    send.add_argument(
        "--secret", help="signing key (default: SOAPRECEPTOR_SECRET, or the first of SOAPRECEPTOR_SECRET_FILE)"
    )
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    send.add_argument(
        "--version-in",
        choices=VERSION_PLACES,
        default="namespace",
        help="where the version travels besides the Notify namespace: nowhere else (default), "
        "a WSDL URL in SOAPAction, or a WSDL URL in a SOAP Header",
    )
    faults = send.add_mutually_exclusive_group()
    faults.add_argument("--wrong-key", action="store_true", help="sign with a key the receptor does not have")
    faults.add_argument("--unsigned", action="store_true", help="send no Signature element")
    faults.add_argument(
        "--deprecated", action="store_true", help="send Signature DEPRECATED, as MTurk did after key deletion"
    )
    send.add_argument(
        "--stale", type=float, nargs="?", const=3600.0, metavar="SECONDS",
        help="date the Timestamp this many seconds in the past (default 3600)",
    )  # fmt: skip
    send.add_argument("--dry-run", action="store_true", help="print the HTTP headers and envelope; send nothing")
    send.set_defaults(run=_send)

    wsdl = commands.add_parser("wsdl", help="print a version's WSDL with the receptor's address filled in")
    wsdl.add_argument(
        "--version",
        dest="notification_version",
        default=versions.DEFAULT_VERSION,
        choices=versions.VERSIONS,
        help="notification API version (default %(default)s)",
    )
    wsdl.add_argument(
        "--url", help="the receptor's public URL (default: SOAPRECEPTOR_PUBLIC_URL, else the placeholder)"
    )
    wsdl.set_defaults(run=_wsdl)
    return parser


def _serve(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.bind:
        problem = bind_problem(args.bind)
        if problem:
            raise ConfigError(f"--bind {args.bind!r}: {problem}")
        env["SOAPRECEPTOR_BIND"] = args.bind
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {args.workers}")
        env["SOAPRECEPTOR_WORKERS"] = str(args.workers)
    # Check the settings and the hook here, so a mistake is one clear line
    # instead of gunicorn's start-up traceback.
    settings = Settings.from_env(env)
    problem = listen_problem(settings.bind)
    if problem:
        if args.bind:
            named = f"--bind {args.bind!r}"
        elif env.get("SOAPRECEPTOR_BIND", "").strip():
            named = f"SOAPRECEPTOR_BIND={settings.bind!r}"
        else:
            named = f"the default address {settings.bind!r} (set SOAPRECEPTOR_BIND or pass --bind)"
        raise ConfigError(f"{named}: {problem}")
    create_app(settings)
    # The receptor's journal file, opened by every worker and the dispatcher,
    # must be the same file whatever directory they run in.
    env["SOAPRECEPTOR_JOURNAL"] = str(Path(settings.journal).resolve())
    command = serve_command()
    if args.demo:
        _start_demo(settings, env)
    os.execve(sys.executable, command, env)  # noqa: S606 (our own interpreter, fixed arguments)
    return 0  # not reached


def listen_problem(bind: str) -> str | None:
    """Why this machine cannot listen on the TCP address ``bind`` (HOST:PORT) now, or None if it can.

    Found by resolving the host and binding a socket there (as gunicorn
    will, with SO_REUSEADDR) and closing it at once: gunicorn meets the same
    mistakes only after it has started, retries each five times a second
    apart, and calls it a failed "connection". Other addresses (unix:PATH,
    fd://N) are left to gunicorn.
    """
    address = parse_address(bind)
    if not isinstance(address, tuple):
        return None
    host, port = address
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen there: the host name {host!r} does not resolve ({exc.strerror})"
    family, kind, protocol, _, where = found[0]
    try:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
            probe.listen()
    except OSError as exc:
        reason = {
            errno.EADDRINUSE: f"port {port} is in use there (another receptor, or another program)",
            errno.EADDRNOTAVAIL: f"{host!r} is not an address of this machine",
            errno.EACCES: f"no permission to listen on port {port} (ports below 1024 need privileges)",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        return f"cannot listen there: {reason}"
    return None


def _start_demo(settings: Settings, env: dict[str, str]) -> None:
    bind = settings.bind
    if bind.startswith("unix:"):
        raise ConfigError("--demo needs a TCP --bind (host:port)")
    url = f"http://{bind}/"
    secret = env.get("SOAPRECEPTOR_SECRET", "")
    # A separate, short-lived process: it waits for the server, sends one HIT's
    # life cycle and exits; it must not be a child gunicorn would inherit.
    subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "soapreceptor.demo", url],
        env={**env, "SOAPRECEPTOR_SECRET": secret},
        start_new_session=True,
    )


def _journal() -> Journal:
    settings = Settings.from_env()
    try:
        return Journal(settings.journal).open()
    except JournalError as exc:
        raise ConfigError(f"SOAPRECEPTOR_JOURNAL={settings.journal!r}: {exc}") from None


def _dispatch(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    hook = load_hook(settings.hook) if isinstance(settings.hook, str) else settings.hook
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    journal = _journal()  # checked here, so a bad path is one clear line and exit 2
    if args.nice:
        os.nice(args.nice)
    if args.idle:
        _run_when_idle()

    def make_dispatcher() -> Dispatcher:
        return Dispatcher(
            journal=Journal(journal.path, durable=False),  # its commits may be lost without losing an event
            hook=hook,
            retry=RetryPolicy(settings.retry_schedule),
            hook_timeout=settings.hook_timeout,
        )

    journal.close()
    return supervise(make_dispatcher, parent=args.parent)


def _run_when_idle() -> None:
    """Give this process (and the dispatcher it forks) only the CPU time no other process wants.

    The embedded dispatcher shares the cores with the workers whose answers
    MTurk is waiting for, and the events are safe in the journal meanwhile:
    under SCHED_IDLE any worker that wakes takes the CPU from it at once,
    rather than after a share of it (which a nice value only makes smaller).
    Where there is no SCHED_IDLE, the lowest nice value is the nearest thing.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19 - os.nice(0))


def _events(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        # SQLite would read a negative LIMIT as none at all: the opposite of what was asked.
        raise ConfigError(f"--limit must be 0 or more, not {args.limit}")
    for stored in _journal().events(args.state, args.limit):
        print(json.dumps(_event_json(stored)) if args.json else _event_line(stored))
    return 0


def _event_json(stored: StoredEvent) -> dict[str, object]:
    return {
        "id": stored.id,
        "message_id": stored.message_id,
        **stored.event.as_json(),
        "state": stored.state,
        "attempts": stored.attempts,
        "last_error": stored.last_error,
        "duplicate_of": stored.duplicate_of,
    }


def _event_line(stored: StoredEvent) -> str:
    event = stored.event
    extra = f" duplicate_of={stored.duplicate_of}" if stored.duplicate_of else ""
    error = f" last_error={stored.last_error!r}" if stored.last_error else ""
    return (
        f"{stored.id:>8} {stored.state:<9} attempts={stored.attempts} {event.event_type:<22}"
        f" hit={event.hit_id or '-'} assignment={event.assignment_id or '-'}{extra}{error}"
    )


def _redeliver(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.dead):
        raise ConfigError("redeliver takes event ids or --dead (one of the two)")
    journal = _journal()
    if args.dead:
        print(f"{journal.redeliver_dead()} dead event(s) put back in line")
        return 0
    try:
        ids = journal.redeliver(args.ids)
    except KeyError as exc:
        missing = ", ".join(str(i) for i in exc.args[0])
        raise ConfigError(
            f"no event to redeliver with id {missing} (unknown, or a duplicate); nothing changed"
        ) from None
    waiting = [i for i in dict.fromkeys(args.ids) if i not in ids]
    print(f"{len(ids)} event(s) put back in line" + (f": {', '.join(map(str, ids))}" if ids else ""))
    if waiting:
        print(f"already waiting for delivery, left as they are: {', '.join(map(str, waiting))}")
    return 0


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or plain seconds, as seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"--older-than {text!r} is not a duration such as 30d, 12h, 90m or 45s")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _purge(args: argparse.Namespace) -> int:
    deleted = _journal().purge_delivered(parse_duration(args.older_than))
    print(f"{deleted} delivered event(s) older than {args.older_than} deleted")
    return 0


def _send(args: argparse.Namespace) -> int:
    if not 0 < args.timeout < math.inf:
        raise ConfigError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    require_http_url(args.url, "--url")
    try:
        events = [EventSpec.parse(text) for text in args.event]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    timestamp = None if args.stale is None else stale_timestamp(args.stale, dt.datetime.now(dt.UTC))
    for event in events:
        if (notice := unknown_type_notice(event.event_type)) is not None:
            print(f"soapreceptor: {notice}", file=sys.stderr)
    secret: str | None = None
    if not (args.unsigned or args.deprecated):
        secret = required_signing_secret(args.secret, "send")
        if args.wrong_key:
            secret = "not-" + secret  # a key that differs from the receptor's by construction
    sender = Sender(
        args.url, secret, version=args.notification_version, timeout=args.timeout, version_in=args.version_in
    )
    signature = DEPRECATED if args.deprecated else None
    if args.dry_run:
        for name, value in sender.headers().items():
            print(f"{name}: {value}")
        print()
        sys.stdout.flush()
        sys.stdout.buffer.write(sender.envelope(events, timestamp=timestamp, signature=signature) + b"\n")
        return 0
    try:
        result = sender.send(events, timestamp=timestamp, signature=signature)
    except SendError as exc:
        print(f"soapreceptor: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"{len(events)} event(s), version {args.notification_version}: {result}")
    return 0 if result.accepted else EXIT_REFUSED


def stale_timestamp(seconds: float, now: dt.datetime) -> str:
    """``send --stale``: the Timestamp ``seconds`` before ``now``; ConfigError for a time that is not in the past."""
    if not 0 <= seconds < math.inf:  # NaN fails both
        raise ConfigError(f"--stale must be 0 or more seconds in the past, not {seconds:g}")
    try:
        return format_timestamp(now - dt.timedelta(seconds=seconds))
    except OverflowError:
        raise ConfigError(f"--stale {seconds:g} reaches back before the year 1") from None


def unknown_type_notice(event_type: str) -> str | None:
    """``send --event``: what to say about a type MTurk is not known to send (None for a known one).

    Sent all the same: the receptor accepts and hands on unknown types (so
    that no new one is ever lost), and sending one is how to see that. But
    a misspelt type would otherwise be accepted without a word.
    """
    known = [member.value for member in EventType]
    if event_type in known:
        return None
    close = difflib.get_close_matches(event_type, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else f" ({', '.join(known)})"
    return f"--event type {event_type!r} is not one MTurk is known to send{hint}; sending it as given"


def _wsdl(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("SOAPRECEPTOR_PUBLIC_URL", "").strip() or None
    if url:
        require_http_url(url, "--url" if args.url else "SOAPRECEPTOR_PUBLIC_URL")
    version = args.notification_version
    document = wsdl_with_address(version, url) if url else wsdl_path(version).read_bytes()
    sys.stdout.buffer.write(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
