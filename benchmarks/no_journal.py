"""soapreceptor with its journal write left out: a diagnostic, never a receptor to run.

The shipped WSGI application with one change: :meth:`GroupCommit.append`
returns at once, without writing anything. Everything else on
the Notify path (HTTP, routing, the fast Notify reader inside spyne, the
signature check, the answer, the access log, the metrics) is the shipped
code. Measured beside the shipped receptor, it tells how much of the time per
message is the durable journal commit and how much the rest, which is what
decides where to look for speed. It loses every message it answers, so it
lives here, not in the package.
"""

from __future__ import annotations

from soapreceptor import group_commit
from soapreceptor.journal import Arrival
from soapreceptor.model import Notification
from soapreceptor.wsgi import application

__all__ = ["application"]


def _forget(self: group_commit.GroupCommit, notification: Notification, arrival: Arrival, now: float) -> None:
    """Keep nothing."""


group_commit.GroupCommit.append = _forget  # type: ignore[method-assign]
