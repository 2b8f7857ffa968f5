"""The reference peer: the receptor a newcomer to spyne would write from the documentation.

A ``Soap11(validator='lxml')`` service with an ``@rpc`` ``Notify``, an HMAC
check and the hook called inline, no journal. It is deliberately the
straightforward version, not a straw man: it does verify the signature
correctly (on the raw ``Timestamp`` text from the parsed request document, as
the design notes say it must), and it answers MTurk's message.

Run it like the others: ``gunicorn -c benchmarks/gunicorn_bench.py benchmarks.naive_spyne:application``
with ``SOAPRECEPTOR_SECRET`` set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import soapreceptor  # noqa: F401 (first: it makes spyne importable on Python 3.12+)
from spyne import Application, ComplexModel, DateTime, Fault, Iterable, Service, Unicode, rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

NAMESPACE = "http://requester.mturk.amazonaws.com/doc/2006-05-05"
SECRET = os.environ.get("SOAPRECEPTOR_SECRET", "bench-secret").encode()


class Event(ComplexModel):
    __namespace__ = NAMESPACE
    EventType = Unicode
    EventTime = DateTime
    HITTypeId = Unicode
    HITId = Unicode
    AssignmentId = Unicode


def hook(event: Event) -> None:
    """The user's hook, called inline (a no-op here, as in the other receptors' runs)."""


class NotificationService(Service):
    @rpc(
        Unicode,
        DateTime,
        Unicode,
        Event.customize(max_occurs="unbounded"),
        _in_variable_names={"signature": "Signature", "timestamp": "Timestamp", "version": "Version", "event": "Event"},
        _returns=None,
    )
    def Notify(ctx: Any, signature: str, timestamp: Any, version: str, event: Iterable) -> None:  # noqa: N802, N805
        # The signature covers the Timestamp text as received: read it from the request document.
        raw = ctx.in_body_doc.findtext(f"{{{NAMESPACE}}}Timestamp")
        expected = base64.b64encode(
            hmac.new(SECRET, b"AWSMechanicalTurkRequesterNotificationNotify" + raw.encode(), hashlib.sha1).digest()
        ).decode()
        if not hmac.compare_digest(expected, signature or ""):
            raise Fault("Client.InvalidSignature", "the signature does not match")
        for each in event:
            hook(each)


application = WsgiApplication(
    Application(
        [NotificationService],
        tns=NAMESPACE,
        name="AWSMechanicalTurkRequesterNotification",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )
)
