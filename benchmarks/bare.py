"""The bare limit: parse the envelope with lxml, check the HMAC, answer a fixed ``NotifyResponse``.

No spyne, no journal, no logging, no version routing beyond the namespace:
the least any correct receptor must do per message. Nothing that verifies
the signature of the same messages on the same machine can be faster, so
soapreceptor's throughput divided by this one's is its distance from the limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from typing import Any

from lxml import etree

SECRET = os.environ.get("SOAPRECEPTOR_SECRET", "bench-secret").encode()
_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
_PREFIX = b"AWSMechanicalTurkRequesterNotificationNotify"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
_RESPONSE = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b'<NotifyResponse xmlns="%s"/></soapenv:Body></soapenv:Envelope>'
)


def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Answer a signed Notify with NotifyResponse, anything else with 400."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    try:
        soap_body = etree.fromstring(body, _PARSER).find(f"{{{_SOAP}}}Body")
        if soap_body is None or not len(soap_body):
            raise ValueError("no SOAP Body")
        notify = soap_body[0]
        namespace = etree.QName(notify).namespace
        timestamp = notify.findtext(f"{{{namespace}}}Timestamp")
        if namespace is None or timestamp is None:
            raise ValueError("not a Notify")
        signature = notify.findtext(f"{{{namespace}}}Signature") or ""
        digest = hmac.new(SECRET, _PREFIX + timestamp.encode(), hashlib.sha1).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            raise ValueError("bad signature")
    except Exception:  # any failure is simply a refusal here
        start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    answer = _RESPONSE % namespace.encode()
    start_response("200 OK", [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(answer)))])
    return [answer]
