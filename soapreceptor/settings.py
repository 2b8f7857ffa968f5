"""Settings, read from the environment under fixed names so deployments and tests can rely on them.

===============================  ==========================================================
``SOAPRECEPTOR_HOOK``            ``package.module:function`` called once per event
                                 (default: :func:`soapreceptor.hooks.log_event`)
``SOAPRECEPTOR_SECRET``          the AWS secret access key notifications are signed with
``SOAPRECEPTOR_SECRET_FILE``     a file of secrets, one per line, all accepted (key rotation);
                                 blank lines and lines starting with ``#`` are skipped
``SOAPRECEPTOR_PUBLIC_URL``      the URL MTurk calls; the WSDL's ``soap:address``, and its path
                                 is where Notify is served (default ``http://127.0.0.1:8080/``)
``SOAPRECEPTOR_TIMESTAMP_TOLERANCE``  freshness window in seconds either way; 0 turns it off (300)
``SOAPRECEPTOR_ACCEPT_UNSIGNED`` ``1`` to accept a missing, empty or ``DEPRECATED`` Signature (``0``)
``SOAPRECEPTOR_BIND``            where gunicorn listens (``127.0.0.1:8080``)
``SOAPRECEPTOR_JOURNAL``         the SQLite journal file (``./soapreceptor.db``)
``SOAPRECEPTOR_DISPATCHER``      ``embedded`` (default): gunicorn runs a dispatcher beside its
                                 workers; ``off``: run ``soapreceptor dispatch`` yourself
``SOAPRECEPTOR_RETRY_SCHEDULE``  seconds before each retry of a failing hook, comma-separated
                                 (default ``5,300,1800,7200,18000,36000,36000``)
``SOAPRECEPTOR_HOOK_TIMEOUT``    seconds one hook call may take (30)
``SOAPRECEPTOR_MAX_BODY``        the largest request body accepted, in bytes (262144: 256 KiB)
``SOAPRECEPTOR_LOG_FORMAT``      ``text`` (default) or ``json``: one JSON object per log line (read by gunicorn_config)
``SOAPRECEPTOR_CPU_AFFINITY``    ``auto`` (default) or ``off``: each worker on a CPU of its own where there is
                                 one for each (read by gunicorn_config; see :mod:`soapreceptor.affinity`)
``SOAPRECEPTOR_SCHED_POLICY``    ``batch`` (default) or ``normal``: the workers' Linux scheduling policy
                                 (read by gunicorn_config; see :mod:`soapreceptor.scheduling`)
===============================  ==========================================================
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gunicorn.util import parse_address

from .dispatch import DEFAULT_HOOK_TIMEOUT, DEFAULT_SCHEDULE, parse_schedule
from .errors import ConfigError
from .gate import DEFAULT_MAX_BODY
from .hooks import DEFAULT_HOOK, Hook
from .signature import Keyring

logger = logging.getLogger("soapreceptor")

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080/"
DEFAULT_BIND = "127.0.0.1:8080"
_LAST_PORT = 65535
DEFAULT_TOLERANCE = 300.0
DEFAULT_JOURNAL = "soapreceptor.db"
DISPATCHER_MODES = ("embedded", "off")


@dataclass(frozen=True)
class Settings:
    """Everything a receptor needs to run. Build it directly, or with :meth:`from_env`."""

    keyring: Keyring = field(default_factory=Keyring)
    hook: str | Hook = DEFAULT_HOOK
    public_url: str = DEFAULT_PUBLIC_URL
    timestamp_tolerance: float = DEFAULT_TOLERANCE
    accept_unsigned: bool = False
    bind: str = DEFAULT_BIND
    journal: str = DEFAULT_JOURNAL
    dispatcher: str = "embedded"
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    max_body: int = DEFAULT_MAX_BODY

    def __post_init__(self) -> None:
        if self.timestamp_tolerance < 0:
            raise ConfigError(
                "SOAPRECEPTOR_TIMESTAMP_TOLERANCE must be 0 (off) or a number of seconds, "
                f"not {self.timestamp_tolerance}"
            )
        if self.dispatcher not in DISPATCHER_MODES:
            modes = ", ".join(DISPATCHER_MODES)
            raise ConfigError(f"SOAPRECEPTOR_DISPATCHER={self.dispatcher!r} must be one of {modes}")
        if self.hook_timeout <= 0:
            raise ConfigError(
                f"SOAPRECEPTOR_HOOK_TIMEOUT must be a positive number of seconds, not {self.hook_timeout:g}"
            )
        if self.max_body < 1024:
            raise ConfigError(f"SOAPRECEPTOR_MAX_BODY must be at least 1024 bytes, not {self.max_body}")
        problem = bind_problem(self.bind)
        if problem:
            raise ConfigError(f"SOAPRECEPTOR_BIND={self.bind!r}: {problem}")
        require_http_url(self.public_url, "SOAPRECEPTOR_PUBLIC_URL")

    def require_secret(self) -> None:
        """Raise :class:`ConfigError` unless a receptor could check signatures (or was told not to)."""
        if not self.keyring and not self.accept_unsigned:
            raise ConfigError(
                "no secret is configured: set SOAPRECEPTOR_SECRET (or SOAPRECEPTOR_SECRET_FILE) to the AWS "
                "secret access key your notifications are signed with, or set SOAPRECEPTOR_ACCEPT_UNSIGNED=1 "
                "to accept unsigned notifications"
            )

    @property
    def path(self) -> str:
        """The URL path Notify is served at (the public URL's path)."""
        return urlsplit(self.public_url).path or "/"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``SOAPRECEPTOR_*`` variables; raise :class:`ConfigError` naming any bad one."""
        env = os.environ if environ is None else environ
        secrets: list[str] = []
        if env.get("SOAPRECEPTOR_SECRET", "").strip():
            secrets.append(env["SOAPRECEPTOR_SECRET"].strip())
        if env.get("SOAPRECEPTOR_SECRET_FILE", "").strip():
            secrets.extend(read_secret_file(Path(env["SOAPRECEPTOR_SECRET_FILE"].strip())))
        return cls(
            keyring=Keyring(secrets),
            hook=env.get("SOAPRECEPTOR_HOOK", "").strip() or DEFAULT_HOOK,
            public_url=env.get("SOAPRECEPTOR_PUBLIC_URL", "").strip() or DEFAULT_PUBLIC_URL,
            timestamp_tolerance=_number(env, "SOAPRECEPTOR_TIMESTAMP_TOLERANCE", DEFAULT_TOLERANCE),
            accept_unsigned=_flag(env, "SOAPRECEPTOR_ACCEPT_UNSIGNED"),
            bind=env.get("SOAPRECEPTOR_BIND", "").strip() or DEFAULT_BIND,
            journal=env.get("SOAPRECEPTOR_JOURNAL", "").strip() or DEFAULT_JOURNAL,
            dispatcher=env.get("SOAPRECEPTOR_DISPATCHER", "").strip().lower() or "embedded",
            retry_schedule=_schedule(env),
            hook_timeout=_number(env, "SOAPRECEPTOR_HOOK_TIMEOUT", DEFAULT_HOOK_TIMEOUT),
            max_body=_bytes(env, "SOAPRECEPTOR_MAX_BODY", DEFAULT_MAX_BODY),
        )


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host (and a port, if any, that is a number 0-65535)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (read for the ValueError it raises on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def require_http_url(url: str, name: str) -> None:
    """Raise :class:`ConfigError` naming ``name`` (an option or setting) unless ``url`` is an absolute http(s) URL."""
    if not is_http_url(url):
        # As every refusal names its value: SETTING='value', --option 'value'.
        named = f"{name}={url!r}" if name.startswith("SOAPRECEPTOR_") else f"{name} {url!r}"
        raise ConfigError(f"{named} is not an http(s) URL such as https://example.org/mturk")


def bind_problem(bind: str) -> str | None:
    """What is wrong with ``bind`` as an address for gunicorn to listen on, or None if nothing is.

    Read as gunicorn reads it (HOST:PORT, [IPv6]:PORT, unix:PATH, fd://N),
    before gunicorn does: it answers a port past 65535 with a traceback, and
    the other mistakes with a line that does not name the setting.
    """
    try:
        address = parse_address(bind)
    except RuntimeError as exc:
        return str(exc).rstrip(".")
    if isinstance(address, tuple) and not 0 <= address[1] <= _LAST_PORT:
        return f"port {address[1]} is not between 0 and {_LAST_PORT}"
    return None


def signing_secret(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The key the tools sign with: ``explicit`` (a --secret option), else ``SOAPRECEPTOR_SECRET``,
    else the first key of ``SOAPRECEPTOR_SECRET_FILE``; None when there is none."""
    env = os.environ if environ is None else environ
    if explicit:
        return explicit
    if env.get("SOAPRECEPTOR_SECRET", "").strip():
        return env["SOAPRECEPTOR_SECRET"].strip()
    if env.get("SOAPRECEPTOR_SECRET_FILE", "").strip():
        return read_secret_file(Path(env["SOAPRECEPTOR_SECRET_FILE"].strip()))[0]
    return None


def required_signing_secret(explicit: str | None, needed_by: str) -> str:
    """:func:`signing_secret`, or :class:`ConfigError` saying that ``needed_by`` (a command or option) needs one."""
    secret = signing_secret(explicit)
    if secret is None:
        raise ConfigError(
            f"{needed_by} needs a signing key: pass --secret or set SOAPRECEPTOR_SECRET or SOAPRECEPTOR_SECRET_FILE"
        )
    return secret


def read_secret_file(path: Path) -> list[str]:
    """The secrets in ``path``: one per line, blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SOAPRECEPTOR_SECRET_FILE={str(path)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"SOAPRECEPTOR_SECRET_FILE={str(path)!r} is not UTF-8 text") from None
    mode = path.stat().st_mode
    if mode & 0o077:
        logger.warning(
            "SOAPRECEPTOR_SECRET_FILE=%s can be read by other users (mode %o); chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    secrets = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not secrets:
        raise ConfigError(f"SOAPRECEPTOR_SECRET_FILE={str(path)!r} holds no secret (one per line)")
    return secrets


def one_of(env: Mapping[str, str], name: str, choices: Mapping[str, str]) -> str:
    """Setting ``name`` from ``env``: one of ``choices`` (value -> what it does), the first when unset.

    Case and surrounding blanks do not matter. Raises ValueError naming
    every choice and what it does, for the caller to stop with.
    """
    value = env.get(name, "").strip().lower() or next(iter(choices))
    if value not in choices:
        listed = [f"{choice!r} ({meaning})" for choice, meaning in choices.items()]
        raise ValueError(f"{name} is {value!r}; use {', '.join(listed[:-1])} or {listed[-1]}")
    return value


def count_setting(env: Mapping[str, str], name: str, default: int) -> int:
    """The setting ``name`` in ``env`` as a whole number of 1 or more; ``default`` when it is unset or blank."""
    return _whole_number(env, name, default, least=1, what="a whole number of 1 or more")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    return _whole_number(env, name, default, least=0, what="a whole number of bytes")


def _whole_number(env: Mapping[str, str], name: str, default: int, *, least: int, what: str) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < least:
        raise ConfigError(f"{name}={raw!r} is not {what}")
    return int(raw)


def _schedule(env: Mapping[str, str]) -> tuple[float, ...]:
    raw = env.get("SOAPRECEPTOR_RETRY_SCHEDULE", "").strip()
    if not raw:
        return DEFAULT_SCHEDULE
    try:
        return parse_schedule(raw)
    except ValueError as exc:
        raise ConfigError(f"SOAPRECEPTOR_RETRY_SCHEDULE: {exc}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} must be 0 or 1")
