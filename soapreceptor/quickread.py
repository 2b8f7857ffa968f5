"""A quick reading of a ``Notify`` request in MTurk's own layout, without building an XML tree.

Almost every message a receptor receives has the one layout MTurk's
documentation shows (and the test sender reproduces): the envelope's
namespace declarations, an optional SOAP Header holding the WSDL URL, then
``Notify`` with Signature, Timestamp, Version and Events, each Event's five
fields in order, text and white space between the tags, and nothing else.
For a message of ten events, parsing that with lxml and reading the tree
was most of a message's own time in the receptor (issue 8).

:func:`match` checks a body against that layout, written out below as
regular expressions (up to the first Event, each Event, after the last), and
returns the texts where it fits. What it lets through is a strict subset of
what lxml's hardened parser accepts as namespace-well-formed XML 1.0: ASCII
only, no more than a few megabytes, short prefixes (within libxml2's limits);
the element names and their attributes spelled exactly;
text with no markup, no reference and no character XML would change (no
``&``, ``<``, ``>``, carriage return or control character), so that each
text is what lxml's ``.text`` gives; every prefix used declared once, none
reserved, and every namespace name a plain URI. Anything else (a comment,
CDATA, an entity, another attribute
or order, a self-closed element, a DTD) returns None, and the message takes
the full reading (:func:`soapreceptor.wire.parse_notify`), which is also
what judges every fault: this reading only ever accepts.

The expression cannot backtrack far: every repetition is followed by
something it cannot match (white space by ``<``, text by ``<``, an Event
by ``</Notify>``), so each choice is decided by the next character.
tests/test_quickread.py holds this reading to the full one, result for
result, on recorded, generated and mutated messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: White space between tags, as XML defines it (``\s`` would also take form feeds, which XML forbids).
_S: Final[str] = r"[ \t\r\n]*"
#: Text as lxml reads it back unchanged: no markup or reference, no CR (read as LF), no control character.
_TEXT: Final[str] = r"[^<&>\x00-\x08\x0b-\x1f]*"
#: A namespace name: a scheme and unreserved characters only, which libxml2 always takes for a URI
#: (it refuses a namespace name that is not one, such as ``urn:%zz``).
_VALUE: Final[str] = r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9/._~:-]+"
#: A prefix of a sensible length (libxml2 refuses names over 50,000 characters; this must refuse them too).
_PREFIX: Final[str] = r"[A-Za-z_][A-Za-z0-9._-]{0,63}"
#: Larger bodies take the full reading: without huge_tree, libxml2 refuses a text over 10 MB.
_MOST: Final[int] = 4 * 1024 * 1024


def _field(name: str) -> str:
    return f"<{name}>({_TEXT})</{name}>{_S}"


#: An Event's five fields in order, any but EventType left out (a HIT's events have no AssignmentId).
_EVENT: Final[str] = (
    f"<Event>{_S}{_field('EventType')}"
    + "".join(f"(?:{_field(name)})?" for name in ("EventTime", "HITTypeId", "HITId", "AssignmentId"))
    + f"</Event>{_S}"
)
#: The document up to its first Event.
_HEAD: Final[re.Pattern[str]] = re.compile(
    rf"""(?:<\?xml\ version=(?P<q1>["'])1\.0(?P=q1)(?:\ encoding=(?P<q2>["'])(?:UTF|utf)-8(?P=q2))?\?>{_S})?
    <(?P<p>{_PREFIX}):Envelope(?P<declarations>(?:[ \t\r\n]+xmlns:{_PREFIX}=(?P<q3>["']){_VALUE}(?P=q3))+){_S}>{_S}
    (?:<(?P=p):Header>{_S}
        <WSDL\ xmlns=(?P<q4>["'])(?P<wsdl_namespace>{_VALUE})(?P=q4)>(?P<wsdl>{_TEXT})</WSDL>{_S}
    </(?P=p):Header>{_S})?
    <(?P=p):Body>{_S}
    <Notify\ xmlns=(?P<q5>["'])(?P<namespace>{_VALUE})(?P=q5)>{_S}
    (?:<Signature>(?P<signature>{_TEXT})</Signature>{_S})?
    <Timestamp(?P<typed>\ xsi:type=(?P<q6>["'])xsd:dateTime(?P=q6))?>(?P<timestamp>{_TEXT})</Timestamp>{_S}
    <Version>(?P<version>{_TEXT})</Version>{_S}""",
    re.VERBOSE,
)
#: One Event, and the white space after it.
_EVENT_AT: Final[re.Pattern[str]] = re.compile(_EVENT)
#: The document after its last Event (the prefixes are checked against the Envelope's).
_TAIL: Final[re.Pattern[str]] = re.compile(rf"</Notify>{_S}</({_PREFIX}):Body>{_S}</({_PREFIX}):Envelope>{_S}")
_DECLARATION: Final[re.Pattern[str]] = re.compile(rf"xmlns:({_PREFIX})=[\"']({_VALUE})[\"']")
_SOAP11_ENV: Final[str] = "http://schemas.xmlsoap.org/soap/envelope/"
#: Namespace names no prefix may be bound to but ``xml`` (and, for the second, none at all).
_RESERVED: Final[frozenset[str]] = frozenset({"http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/"})


@dataclass(frozen=True, slots=True)
class Layout:
    """The texts of a message in MTurk's layout, each exactly as lxml's ``.text`` reads it ("" for none)."""

    #: The namespace of ``Notify``.
    namespace: str
    #: The SOAP Header's one block, ``<WSDL xmlns=namespace>text</WSDL>``, as (namespace, text); None without a Header.
    header: tuple[str, str] | None
    #: The Signature's text ("" for none: the element empty or left out).
    signature: str
    timestamp: str
    version: str
    #: Each Event's EventType, EventTime, HITTypeId, HITId and AssignmentId ("" also for one left out).
    events: list[tuple[str, str, str, str, str]]


def match(body: bytes) -> Layout | None:
    """The texts of ``body`` if it is a SOAP 1.1 ``Notify`` in MTurk's layout (see the module), else None."""
    if len(body) > _MOST or not body.isascii():
        return None
    text = body.decode("ascii")
    head = _HEAD.match(text)
    if head is None:
        return None
    events: list[tuple[str, str, str, str, str]] = []
    at = head.end()
    while (event := _EVENT_AT.match(text, at)) is not None:
        event_type, event_time, hit_type_id, hit_id, assignment_id = event.groups("")  # "": left out
        events.append((event_type, event_time, hit_type_id, hit_id, assignment_id))
        at = event.end()
    tail = _TAIL.fullmatch(text, at)
    prefix = head["p"]
    if not events or tail is None or tail[1] != prefix or tail[2] != prefix:
        return None
    declared: dict[str, str] = {}
    for name, namespace in _DECLARATION.findall(head["declarations"]):
        if name in declared or name[:3].lower() == "xml" or namespace in _RESERVED:
            return None  # declared twice, or reserved: not namespace-well-formed
        declared[name] = namespace
    if declared.get(prefix) != _SOAP11_ENV or (head["typed"] and "xsi" not in declared):
        return None
    if head["wsdl_namespace"] in _RESERVED:
        return None
    return Layout(
        namespace=head["namespace"],
        header=None if head["wsdl"] is None else (head["wsdl_namespace"], head["wsdl"]),
        signature=head["signature"] or "",
        timestamp=head["timestamp"],
        version=head["version"],
        events=events,
    )
