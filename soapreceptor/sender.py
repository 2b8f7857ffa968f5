"""A test sender that calls a receptor the way MTurk did, building each call with zeep from ``wsdl/``.

For tests, demos and load: ``Sender(url, secret).send([EventSpec(...)])``
signs a fresh Timestamp, posts the call and reads the answer. The message is
built by zeep from the contract files, so what it sends is what any client
generated from ``wsdl/`` would send.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport

from . import versions, wire
from .contract import wsdl_path
from .errors import SendError
from .signature import sign
from .timestamps import format_timestamp

_BINDING = "AWSMechanicalTurkRequesterNotificationBinding"

#: Where a message carries its notification version, besides the namespace of ``Notify``
#: (always) and ``<Version>`` (always): nowhere else, the HTTP SOAPAction, or a SOAP Header.
VERSION_PLACES = ("namespace", "soapaction", "header")


class EventSpec(NamedTuple):
    """One event to send. ``event_time`` defaults to the moment of sending."""

    event_type: str
    hit_type_id: str | None = None
    hit_id: str | None = None
    assignment_id: str | None = None
    event_time: dt.datetime | None = None

    @classmethod
    def parse(cls, text: str) -> EventSpec:
        """Read ``TYPE[:HITTypeId:HITId[:AssignmentId]]`` as the CLI's ``--event`` takes it."""
        parts = text.split(":")
        if not parts[0] or len(parts) == 2 or len(parts) > 4 or any(not part for part in parts):
            raise ValueError(f"--event {text!r} is not TYPE, TYPE:HITTypeId:HITId or TYPE:HITTypeId:HITId:AssignmentId")
        ids: list[str | None] = [*parts[1:], None, None, None]
        return cls(parts[0], ids[0], ids[1], ids[2])


@dataclass(frozen=True)
class SendResult:
    """What the receptor answered: accepted, or refused with a SOAP fault."""

    status: int
    faultcode: str | None = None
    faultstring: str | None = None

    @property
    def accepted(self) -> bool:
        return self.faultcode is None

    def __str__(self) -> str:
        if self.accepted:
            return f"accepted (HTTP {self.status})"
        return f"refused (HTTP {self.status}): {self.faultcode}: {self.faultstring}"


class Sender:
    """Posts signed ``Notify`` calls of one notification ``version`` to ``url``.

    ``secret`` signs each message; None sends it unsigned (no Signature
    element). ``timeout`` bounds each HTTP exchange, in seconds.
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes | None,
        *,
        version: str = versions.DEFAULT_VERSION,
        timeout: float = 30.0,
        session: requests.Session | None = None,
        version_in: str = "namespace",
    ) -> None:
        if version_in not in VERSION_PLACES:
            raise ValueError(f"version_in must be one of {', '.join(VERSION_PLACES)}, not {version_in!r}")
        self.url = url
        self.version = version
        self.version_in = version_in
        self._secret = secret
        self._timeout = timeout
        settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        transport = Transport(session=session, timeout=timeout, operation_timeout=timeout)
        self._client = zeep.Client(str(wsdl_path(version)), settings=settings, transport=transport)
        self._service = self._client.create_service(f"{{{versions.namespace(version)}}}{_BINDING}", url)

    def __repr__(self) -> str:
        return f"<Sender {self.url} version={self.version}>"

    def envelope(
        self, events: Sequence[EventSpec], *, timestamp: str | None = None, signature: str | None = None
    ) -> bytes:
        """The SOAP envelope :meth:`send` would post, as bytes.

        ``timestamp`` defaults to now; ``signature`` to the signature of the
        timestamp under the sender's secret (none if it has no secret).
        """
        message = self._message(events, timestamp, signature)
        return bytes(etree.tostring(message, xml_declaration=True, encoding="UTF-8"))

    def send(
        self, events: Sequence[EventSpec], *, timestamp: str | None = None, signature: str | None = None
    ) -> SendResult:
        """Build, sign and post one ``Notify`` call; return what the receptor answered.

        Raises :class:`~soapreceptor.errors.SendError` when no SOAP answer came
        back (connection refused, time-out, an answer that is not SOAP).
        """
        message = self._message(events, timestamp, signature)
        headers = self.headers()
        try:
            response = self._client.transport.post_xml(self.url, message, headers)
        except (requests.RequestException, zeep.exceptions.TransportError) as exc:
            raise SendError(f"could not post to {self.url}: {exc}") from exc
        try:
            faultcode, faultstring = wire.read_answer(response.status_code, response.content)
        except ValueError as exc:
            raise SendError(f"{self.url} answered {exc}") from None
        return SendResult(status=response.status_code, faultcode=faultcode, faultstring=faultstring)

    def headers(self) -> dict[str, str]:
        """The HTTP headers each call carries, as an Axis 1.x client (MTurk's) sent them."""
        action = versions.wsdl_url(self.version) if self.version_in == "soapaction" else versions.SOAP_ACTION
        return {"SOAPAction": f'"{action}"', "Content-Type": wire.CONTENT_TYPE}

    def _message(self, events: Sequence[EventSpec], timestamp: str | None, signature: str | None) -> Any:
        if not events:
            raise ValueError("a Notify call carries at least one event")
        now = dt.datetime.now(dt.UTC)
        timestamp = format_timestamp(now) if timestamp is None else timestamp
        if signature is None and self._secret is not None:
            signature = sign(self._secret, timestamp)
        soap_headers = []
        if self.version_in == "header":
            # A header block whose text is the WSDL URL: how Amazon describes
            # "the version in the message header as part of the WSDL URL".
            block = etree.Element(f"{{{versions.namespace(self.version)}}}WSDL")
            block.text = versions.wsdl_url(self.version)
            soap_headers.append(block)
        return self._client.create_message(
            self._service,
            versions.OPERATION,
            _soapheaders=soap_headers or None,
            Signature=signature,
            # Passed as text so that zeep sends exactly the string that was signed.
            Timestamp=timestamp,
            Version=self.version,
            Event=[
                {
                    "EventType": event.event_type,
                    "EventTime": format_timestamp(event.event_time or now),
                    "HITTypeId": event.hit_type_id,
                    "HITId": event.hit_id,
                    "AssignmentId": event.assignment_id,
                }
                for event in events
            ],
        )
