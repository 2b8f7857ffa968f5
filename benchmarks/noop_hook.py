"""The hook of the benchmark's soapreceptor: takes each event and does nothing with it."""

from __future__ import annotations

from soapreceptor import Event


def discard(event: Event) -> None:
    """Accept ``event`` (the dispatcher then marks it delivered in the journal)."""
