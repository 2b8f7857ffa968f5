"""The ``soapreceptor`` command: serve, send, wsdl.

Exit status: 0 success; 1 the receptor refused a message; 2 bad arguments or
settings; 3 the receptor could not be reached.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, versions
from .contract import wsdl_path, wsdl_with_address
from .errors import ConfigError, SendError
from .sender import EventSpec, Sender
from .settings import Settings, read_secret_file
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
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soapreceptor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"soapreceptor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the receptor under gunicorn (settings from SOAPRECEPTOR_*)")
    serve.add_argument("--bind", help="host:port or unix:PATH (default: SOAPRECEPTOR_BIND or 127.0.0.1:8080)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (default: 2 x CPUs + 1)")
    serve.add_argument(
        "--demo", action="store_true", help="also send a short demo HIT life cycle once the server is up"
    )
    serve.set_defaults(run=_serve)

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
        env["SOAPRECEPTOR_BIND"] = args.bind
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {args.workers}")
        env["SOAPRECEPTOR_WORKERS"] = str(args.workers)
    # Check the settings and the hook here, so a mistake is one clear line
    # instead of gunicorn's start-up traceback.
    settings = Settings.from_env(env)
    create_app(settings)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:soapreceptor.gunicorn_config",
        "soapreceptor.wsgi:application",
    ]
    if args.demo:
        _start_demo(settings, env)
    os.execve(sys.executable, command, env)  # noqa: S606 (our own interpreter, fixed arguments)
    return 0  # not reached


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


def _send(args: argparse.Namespace) -> int:
    try:
        events = [EventSpec.parse(text) for text in args.event]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    secret = args.secret or _configured_secret()
    sender = Sender(args.url, secret, version=args.notification_version, timeout=args.timeout)
    try:
        result = sender.send(events)
    except SendError as exc:
        print(f"soapreceptor: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"{len(events)} event(s), version {args.notification_version}: {result}")
    return 0 if result.accepted else EXIT_REFUSED


def _configured_secret() -> str:
    secret = os.environ.get("SOAPRECEPTOR_SECRET", "").strip()
    if secret:
        return secret
    path = os.environ.get("SOAPRECEPTOR_SECRET_FILE", "").strip()
    if path:
        return read_secret_file(Path(path))[0]
    raise ConfigError("no signing key: pass --secret or set SOAPRECEPTOR_SECRET or SOAPRECEPTOR_SECRET_FILE")


def _wsdl(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("SOAPRECEPTOR_PUBLIC_URL", "").strip() or None
    version = args.notification_version
    document = wsdl_with_address(version, url) if url else wsdl_path(version).read_bytes()
    sys.stdout.buffer.write(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
