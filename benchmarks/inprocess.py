"""The Notify pipeline in process, per message size: request bytes in, answer bytes out, journal committed.

No HTTP and no load generator: each receptor's WSGI callable is called
directly, one message after another, so the numbers are the receptors' own
cost per message (soapreceptor's including its fsync'd journal commit, the
two peers with none). It is what grows with the events per message.

Also soapreceptor's dispatcher alone (:func:`dispatcher_rate`): how fast it
hands journaled events on when nothing else runs, which is how fast it
clears a backlog once a burst is over.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import payloads, report

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def apps(workdir: Path) -> dict[str, WsgiApp]:
    """The three receptors as WSGI callables; soapreceptor's journal is a fresh file in ``workdir``."""
    os.environ["SOAPRECEPTOR_SECRET"] = payloads.SECRET  # read by the two peers when imported
    from soapreceptor.settings import Settings  # noqa: PLC0415 (after the environment is set)
    from soapreceptor.wsgi import create_app  # noqa: PLC0415

    from . import bare, naive_spyne  # noqa: PLC0415

    # The access log would measure the terminal; it stays on in the served runs.
    logging.getLogger("soapreceptor").setLevel(logging.WARNING)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env(
        {"SOAPRECEPTOR_SECRET": payloads.SECRET, "SOAPRECEPTOR_JOURNAL": str(workdir / "inprocess.db")}
    )
    return {
        report.SOAPRECEPTOR: create_app(settings),
        report.NAIVE: naive_spyne.application,
        report.BARE: bare.application,
    }


def _environ(body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "text/xml; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_SOAPACTION": '""',
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
    }


def time_per_message(app: WsgiApp, bodies: list[bytes]) -> float:
    """Seconds per message to answer each of ``bodies`` (every answer must be 200)."""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return lambda data: None

    started = time.perf_counter()
    for body in bodies:
        b"".join(app(_environ(body), start_response))
    elapsed = time.perf_counter() - started
    refused = [status for status in statuses if not status.startswith("200")]
    if refused:
        raise RuntimeError(f"the in-process run was refused: {refused[:3]}")
    return elapsed / len(bodies)


def measure(
    workdir: Path, sizes: list[int], messages: int, rounds: int, first_serial: int = 10**11
) -> dict[str, dict[int, float]]:
    """Median seconds per message, by receptor and events per message, over ``rounds`` alternating rounds."""
    receptors = apps(workdir)
    samples: dict[str, dict[int, list[float]]] = {name: {size: [] for size in sizes} for name in receptors}
    serial = first_serial
    for size in sizes:
        for round_number in range(rounds):
            names = list(receptors)
            names = names[round_number % len(names) :] + names[: round_number % len(names)]
            for name in names:
                bodies = list(payloads.messages(size, messages, first=serial))
                serial += messages
                samples[name][size].append(time_per_message(receptors[name], bodies))
    return {
        name: {size: statistics.median(values) for size, values in by_size.items()} for name, by_size in samples.items()
    }


#: How long one dispatcher sample may take before the run is called broken (a loaded 2-core machine).
DISPATCH_DEADLINE = 600.0


def dispatcher_rate(workdir: Path, sizes: list[int], events: int, rounds: int) -> dict[int, float]:
    """Events per second soapreceptor's dispatcher hands to a no-op hook, per message size (median of ``rounds``).

    Each sample is a fresh journal holding at least ``events`` events,
    appended as the receptor's workers append them (not timed), then drained
    by one dispatcher as the receptor runs it (non-durable commits of its
    own, batches, progress log, hook time limit), alone on the machine.
    """
    from soapreceptor import wire  # noqa: PLC0415 (imported when measured, as in apps())
    from soapreceptor.journal import Arrival, Journal  # noqa: PLC0415

    workdir.mkdir(parents=True, exist_ok=True)
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for size in sizes:
        count = math.ceil(events / size)
        for round_number in range(rounds):
            path = workdir / f"dispatch-{size}-{round_number}.db"
            journal = Journal(path).open()
            received = time.time()
            messages = [(wire.parse_notify(body), Arrival(body), received) for body in payloads.messages(size, count)]
            for start in range(0, len(messages), 50):  # as group commits of busy workers would
                journal.append_many(messages[start : start + 50])
            journal.close()
            rates[size].append(size * count / _drain(path, size * count))
            for leftover in workdir.glob(f"{path.name}*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover)  # the spool
                else:
                    leftover.unlink()
    return {size: statistics.median(values) for size, values in rates.items()}


def _drain(path: Path, total: int) -> float:
    """Seconds one dispatcher takes to hand the ``total`` events journaled at ``path`` to a no-op hook."""
    from soapreceptor.dispatch import Dispatcher  # noqa: PLC0415
    from soapreceptor.journal import Journal  # noqa: PLC0415

    handed = 0

    def hook(event: object) -> None:
        nonlocal handed
        handed += 1

    deadline = time.monotonic() + DISPATCH_DEADLINE
    dispatcher = Dispatcher(Journal(path, durable=False), hook, idle_wait=0.001)
    started = time.perf_counter()
    dispatcher.run(lambda: handed < total and time.monotonic() < deadline)
    elapsed = time.perf_counter() - started
    dispatcher.journal.close()
    if handed != total:
        raise RuntimeError(f"the dispatcher handed on {handed} of {total} events in {DISPATCH_DEADLINE:g} s")
    return elapsed
