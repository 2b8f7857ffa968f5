"""A captured message posted again is never handed on twice: not inside the freshness window (the
journal knows it), not after it (the window refuses it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from soapreceptor.journal import Journal
from soapreceptor.signature import sign
from soapreceptor.timestamps import format_timestamp
from tests.support import KEY_2, Server, amazon_envelope, post, wait_for


def test_a_captured_message_replayed_in_and_out_of_the_window(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    journal_path = tmp_path / "journal.db"
    server = server_factory({"SOAPRECEPTOR_JOURNAL": str(journal_path), "SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "10"})
    timestamp = format_timestamp(dt.datetime.now(dt.UTC))
    captured = amazon_envelope(signature=sign(KEY_2, timestamp), timestamp=timestamp)
    assert post(server.url, captured).status == 200
    assert post(server.url, captured).status == 200  # the replay, inside the window
    # Keep replaying until the window has closed on it (no fixed sleep: the receptor says when).
    stale = wait_for(
        lambda: post(server.url, captured).faultcode == "Client.StaleTimestamp", "the window to close", deadline=120
    )
    assert stale
    delivered = server.wait_for_events(1)
    journal = Journal(journal_path)
    try:
        states = [stored.state for stored in journal.events()]
        wait_for(lambda: journal.counts()["pending"] == 0, "delivery")
    finally:
        journal.close()
    assert len(delivered) == 1
    assert states[0] in ("pending", "delivered")
    assert states[1:]
    assert set(states[1:]) == {"duplicate"}
    assert len(server.events()) == 1
