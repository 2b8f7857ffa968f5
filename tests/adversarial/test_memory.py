"""10,000 hostile requests leave a worker's memory bounded, and a valid message is then accepted and delivered."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path

from soapreceptor.signature import sign
from soapreceptor.timestamps import format_timestamp
from tests.support import ACCEPTED_EVENT, KEY_2, Server, amazon_envelope, post, wait_for

HOSTILE = [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><x>&b;</x>',
    b"<soapenv:Envelope><unclosed>",
    b"\xff\xfe\x00\x00garbage" * 100,
    amazon_envelope(signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    amazon_envelope(events=[{"EventType": "Ping", "HITId": "x" * 100_000}], signature="bad"),
    amazon_envelope().replace(b"<Version>", b"<a>" * 300 + b"</a>" * 300 + b"<Version>"),
    amazon_envelope("2099-01-01"),
    b"",
]
REQUESTS = 10_000
# Generous: a leak of even 1 KiB per request would show as 10 MiB; the bound
# only has to catch growth that scales with the number of requests.
GROWTH_LIMIT_KIB = 64 * 1024


def worker_rss_kib(server: Server) -> tuple[int, int]:
    """(pid, VmRSS in KiB) of the server's one gunicorn worker."""
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        if "gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
            return int(pid), int(rss.split()[1])
    raise AssertionError(f"no gunicorn worker among {children}")


def test_memory_stays_bounded_under_hostile_traffic(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    server = server_factory({"SOAPRECEPTOR_JOURNAL": str(tmp_path / "journal.db")}, workers=1)
    hostile = itertools.cycle(HOSTILE)
    for _ in range(500):  # warm up: first-use allocations are not a leak
        post(server.url, next(hostile))
    pid, before = worker_rss_kib(server)
    statuses = {post(server.url, next(hostile)).status for _ in range(REQUESTS)}
    same_pid, after = worker_rss_kib(server)
    assert same_pid == pid, "the worker was replaced: a request killed it"
    assert statuses <= {400, 413, 415, 500}
    print(f"worker RSS {before} KiB -> {after} KiB after {REQUESTS} hostile requests")
    assert after - before < GROWTH_LIMIT_KIB, f"worker RSS grew from {before} KiB to {after} KiB"
    timestamp = format_timestamp(dt.datetime.now(dt.UTC))
    valid = amazon_envelope(
        signature=sign(KEY_2, timestamp), timestamp=timestamp, events=[{**ACCEPTED_EVENT, "AssignmentId": "LAST"}]
    )
    assert post(server.url, valid).status == 200
    events = wait_for(server.events, "the valid event at the hook")
    assert [e["assignment_id"] for e in events] == ["LAST"]
