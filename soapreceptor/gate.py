"""The gate: what a request must be before any XML parser sees it.

A receptor listens on the public internet, where anyone can post anything.
Before spyne or lxml run, a Notify call must be a POST (routing sees to
that), declare an XML media type, and fit in a bounded body; and it may not
carry a DTD, which SOAP 1.1 forbids (section 3) and which is where entity
attacks live. The body is read here, never past the cap, whatever
``Content-Length`` claims.
"""

from __future__ import annotations

from typing import BinaryIO, Final

from . import errors

#: Default cap on a request body: a batch of 100 events is about 40 KiB.
DEFAULT_MAX_BODY: Final[int] = 256 * 1024
MEDIA_TYPES: Final[tuple[str, ...]] = ("text/xml", "application/soap+xml")
_CHUNK: Final[int] = 64 * 1024
# "<!DOCTYPE" as UTF-8/ASCII and as UTF-16 either way round: the gate runs
# before anything knows the document's encoding.
_DOCTYPES: Final[tuple[bytes, ...]] = tuple("<!DOCTYPE".encode(codec) for codec in ("ascii", "utf-16-le", "utf-16-be"))


class Refused(errors.ClientFault):
    """A request the gate turns away, with the HTTP status to answer it with."""

    status: str = "400 Bad Request"


class UnsupportedMediaType(Refused):
    faultcode = "Client.UnsupportedMediaType"
    status = "415 Unsupported Media Type"


class RequestTooLarge(Refused):
    faultcode = "Client.RequestTooLarge"
    status = "413 Content Too Large"


class IncompleteBody(Refused):
    faultcode = "Client.IncompleteBody"
    status = "400 Bad Request"


class DTDNotAllowed(Refused):
    faultcode = "Client.MalformedMessage"
    # Like any other malformed SOAP message: a Fault, with 500 (WS-I BP R1126).
    status = "500 Internal Server Error"


def check_media_type(content_type: str | None) -> None:
    """Refuse a body that does not say it is XML."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        shown = repr(content_type[:100]) if content_type else "missing"
        raise UnsupportedMediaType(
            f"Content-Type is {shown}; a SOAP 1.1 Notify call is sent as text/xml; charset=utf-8"
        )


def read_body(stream: BinaryIO, content_length: str | None, max_body: int) -> bytes:
    """Read the request body, never more than ``max_body`` bytes.

    A declared length over the cap is refused before anything is read. With
    no length (a chunked body) at most ``max_body + 1`` bytes are read, to
    see whether there is more. A body that ends before its declared length
    is refused rather than parsed in part.
    """
    declared: int | None = None
    if content_length not in (None, ""):
        try:
            declared = int(str(content_length).strip())
        except ValueError:
            raise IncompleteBody(f"Content-Length {content_length!r} is not a number") from None
        if declared < 0:
            raise IncompleteBody(f"Content-Length {declared} is negative")
        if declared > max_body:
            raise RequestTooLarge(f"the body is {declared} bytes; this receptor accepts at most {max_body}")
    wanted = declared if declared is not None else max_body + 1
    chunks: list[bytes] = []
    received = 0
    while received < wanted:
        chunk = stream.read(min(_CHUNK, wanted - received))
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    if declared is None and received > max_body:
        raise RequestTooLarge(f"the body is over {max_body} bytes, the most this receptor accepts")
    if declared is not None and received < declared:
        raise IncompleteBody(f"the body ended after {received} of the {declared} bytes Content-Length announced")
    return b"".join(chunks)


def check_body(body: bytes) -> None:
    """Refuse a body with a document type declaration (SOAP 1.1 section 3 forbids one)."""
    # Each marker holds the byte "!", and most messages hold none: one quick scan for it
    # spares three searches for a word whose "<" starts every tag (a share of a request's time).
    if b"!" in body and any(marker in body for marker in _DOCTYPES):
        raise DTDNotAllowed("a DOCTYPE is not allowed in a SOAP message (SOAP 1.1, section 3)")
