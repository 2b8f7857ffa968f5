"""The user's hook: finding it by name, and the hooks soapreceptor ships.

A hook is a plain callable named ``package.module:function`` that receives
one :class:`soapreceptor.Event`; returning normally means "handled", raising
means "not handled".
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

from .errors import ConfigError
from .model import Event

Hook = Callable[[Event], object]

#: The hook used when ``SOAPRECEPTOR_HOOK`` is not set: it logs each event.
DEFAULT_HOOK = "soapreceptor.hooks:log_event"

logger = logging.getLogger("soapreceptor.events")


def load_hook(spec: str) -> Hook:
    """Import the callable named by ``spec`` (``package.module:function``).

    Raises :class:`ConfigError` naming the part that failed, so that a server
    with a bad hook stops at start instead of at its first request.
    """
    module_name, sep, attribute = spec.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"SOAPRECEPTOR_HOOK={spec!r} is not of the form package.module:function")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing the user's module
        raise ConfigError(
            f"SOAPRECEPTOR_HOOK={spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"SOAPRECEPTOR_HOOK={spec!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise ConfigError(
            f"SOAPRECEPTOR_HOOK={spec!r}: {attribute!r} is not callable (it is of type {type(target).__name__})"
        )
    return target


def log_event(event: Event) -> None:
    """Log one line per event (the default hook)."""
    logger.info(
        "event %s hit_type=%s hit=%s assignment=%s time=%s version=%s",
        event.event_type,
        event.hit_type_id,
        event.hit_id,
        event.assignment_id,
        event.event_time.isoformat() if event.event_time else None,
        event.version,
    )


def print_event(event: Event) -> None:
    """Print each event as it arrives, for ``make run`` and first experiments."""
    when = event.event_time.strftime("%H:%M:%S") if event.event_time else "--:--:--"
    ids = " ".join(
        f"{name}={value}"
        for name, value in (("hit", event.hit_id), ("assignment", event.assignment_id))
        if value is not None
    )
    print(f"[demo hook] {when} {event.event_type:<20} {ids}", file=sys.stdout, flush=True)
