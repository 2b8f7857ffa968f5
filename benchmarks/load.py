"""The load generator: wrk (HTTP/1.1 keep-alive, C, latency percentiles) driven by ``wrk.lua``."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import payloads

SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
#: Where the serial number goes in a template (12 characters, as wide as the serial).
MARKER = "@" * 12
#: A paced load has enough connections that each sends about this often, in milliseconds (see harness).
PACE_MS = 15


class LoadError(RuntimeError):
    """wrk is missing or did not produce a usable result."""


@dataclass(frozen=True)
class Load:
    """What one wrk run measured."""

    requests: int
    seconds: float
    refused: int
    errors: int
    p50_ms: float
    p99_ms: float  # wrk's, from when each request left
    #: Paced: how late the requests left, behind their times on the schedule (0 when on time; see wrk.lua),
    #: and bounds on the p99 from when each was due (see due_p99). At full speed nothing is late.
    late_p99_ms: float = 0.0
    late_count: int = 0  # the answers whose lateness was counted: every one, when paced
    due_p99_least_ms: float = 0.0
    due_p99_most_ms: float = 0.0

    @property
    def rate(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def due_p99(latency_tail: Sequence[float], late_tail: Sequence[float]) -> tuple[float, float]:
    """Bounds (at least, at most) on the p99 of latency plus lateness, from each part's percentiles alone.

    ``latency_tail`` and ``late_tail`` are each part's percentiles 99, 99.05,
    ..., 100 (as wrk.lua gives them). wrk cannot tell which lateness went
    with which latency, so the p99 of their sum is known only between
    bounds. At least: either part's p99 (neither part is negative). At most:
    a request over ``a + b`` is over ``a`` in its latency or over ``b`` in its
    lateness; with ``a`` the latency's percentile ``p`` and ``b`` the
    lateness's percentile ``199 - p``, at most ``(100 - p) + (p - 99)``, 1 %,
    of requests are, so the least such sum bounds the p99.
    """
    if len(latency_tail) != len(late_tail) or len(latency_tail) < 2:
        raise ValueError("the two tails must be the same percentiles, from 99 to 100")
    most = min(latency + late for latency, late in zip(latency_tail, reversed(late_tail), strict=True))
    return max(latency_tail[0], late_tail[0]), most


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise LoadError("wrk is not installed: apt-get install wrk (Debian's package is what the results used)")
    return found


def write_template(path: Path, events: int) -> Path:
    """A body with ``events`` events, signed now, with the serial marker where each message's ids go."""
    body = payloads.message(events, 0, stamp=payloads.timestamp())
    body = body.replace(f"{0:012d}".encode(), MARKER.encode())
    path.write_bytes(body)
    return path


def run(
    url: str,
    template: Path,
    *,
    first_serial: int,
    seconds: float,
    connections: int,
    threads: int,
    rate: float = 0,
) -> Load:
    """Run wrk against ``url`` for ``seconds``; ``rate`` (requests a second), if given, paces it (see wrk.lua)."""
    threads = min(threads, connections)
    command = [
        wrk_binary(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, math.ceil(seconds))}s",
        "--timeout=30s",
        "--latency",
        f"--script={SCRIPT}",
        url,
        "--",
        str(template),
        str(first_serial),
        str(threads),
    ]
    env = dict(os.environ)
    env.pop("WRK_RATE", None)
    if rate > 0:
        env["WRK_RATE"] = repr(rate / threads)  # each wrk thread keeps its share of the schedule
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise LoadError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    report = json.loads(lines[-1])
    errors = report["errors"]
    late = report["late_us"]["tail"]
    least, most = due_p99(report["latency_us"]["tail"], late)
    return Load(
        requests=report["requests"] - report["refused"],
        seconds=report["duration_us"] / 1e6,
        refused=report["refused"],
        errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        p50_ms=report["latency_us"]["p50"] / 1000,
        p99_ms=report["latency_us"]["p99"] / 1000,
        late_p99_ms=late[0] / 1000,
        late_count=report["late_us"]["count"],
        due_p99_least_ms=least / 1000,
        due_p99_most_ms=most / 1000,
    )
