"""The load generator: wrk (HTTP/1.1 keep-alive, C, latency percentiles) driven by ``wrk.lua``."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
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
    p995_ms: float
    #: Paced: how late the requests left, behind their times on the schedule (0 when on time; see wrk.lua).
    late_p99_ms: float = 0.0
    late_p995_ms: float = 0.0

    @property
    def rate(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


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
    return Load(
        requests=report["requests"] - report["refused"],
        seconds=report["duration_us"] / 1e6,
        refused=report["refused"],
        errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        p50_ms=report["latency_us"]["p50"] / 1000,
        p99_ms=report["latency_us"]["p99"] / 1000,
        p995_ms=report["latency_us"]["p995"] / 1000,
        late_p99_ms=report["late_us"]["p99"] / 1000,
        late_p995_ms=report["late_us"]["p995"] / 1000,
    )
