"""The Notify call on the wire: request bytes in, :class:`Notification` out, answers back to bytes.

Sans-IO: every function here takes bytes and strings and returns values or
raises a :class:`~soapreceptor.errors.NotifyFault`; nothing reads a socket, a
file, a clock or a global setting. The spyne service, the sender's checks and
the tests all go through this one reading of the protocol.

Reading is tolerant where MTurk's documentation is silent (children in any
order, unknown children ignored, unqualified children accepted, any event type)
and strict where a wrong guess would lose or forge data (one Timestamp, one
Signature, a known version, versions that agree, no DTD).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from lxml import etree

from . import errors, quickread, versions
from .model import Event, Notification
from .timestamps import parse_xsd_datetime

SOAP11_ENV: Final[str] = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV: Final[str] = "http://www.w3.org/2003/05/soap-envelope"
XSI: Final[str] = "http://www.w3.org/2001/XMLSchema-instance"

#: Content-Type of every answer, as SOAP 1.1 over HTTP prescribes.
CONTENT_TYPE: Final[str] = "text/xml; charset=utf-8"

_ENVELOPE: Final[str] = f"{{{SOAP11_ENV}}}Envelope"
_HEADER: Final[str] = f"{{{SOAP11_ENV}}}Header"
_BODY: Final[str] = f"{{{SOAP11_ENV}}}Body"
_MUST_UNDERSTAND: Final[str] = f"{{{SOAP11_ENV}}}mustUnderstand"
_NIL: Final[str] = f"{{{XSI}}}nil"

#: The children of ``Notify`` and of ``Event`` that are read; any other is ignored.
_NOTIFY_CHILDREN: Final[tuple[str, ...]] = ("Event", "Signature", "Timestamp", "Version")
_EVENT_FIELDS: Final[tuple[str, ...]] = ("EventType", "EventTime", "HITTypeId", "HITId", "AssignmentId")


def _tag_table(namespace: str | None) -> dict[str, str]:
    """Tag -> local name of the children read here, qualified in ``namespace`` and unqualified."""
    names = _NOTIFY_CHILDREN + _EVENT_FIELDS
    table = {name: name for name in names}
    if namespace is not None:
        table.update({f"{{{namespace}}}{name}": name for name in names})
    return table


# Built once: reading looks each child's tag up here instead of splitting it into a
# QName, which is most of the cost of reading a message. Read-only, so thread-safe.
_TAG_TABLES: Final[dict[str, dict[str, str]]] = {
    versions.namespace(version): _tag_table(versions.namespace(version)) for version in versions.VERSIONS
}
_NAMESPACE_VERSIONS: Final[dict[str, str]] = {versions.namespace(version): version for version in versions.VERSIONS}

_parsers = threading.local()


def _parser() -> etree.XMLParser:
    """A hardened parser, one per thread (lxml parsers are not thread-safe).

    No entity is ever resolved, no DTD loaded, nothing fetched from the
    network, and libxml2's limits on tree depth and text size stay on.
    """
    parser: etree.XMLParser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            collect_ids=False,
        )
        _parsers.parser = parser
    return parser


@dataclass(frozen=True, slots=True)
class _VersionClaim:
    version: str
    source: str


def parse_notify(body: bytes, soap_action: str | None = None) -> Notification:
    """Read a SOAP 1.1 ``Notify`` request.

    ``body`` is the HTTP request body, ``soap_action`` the HTTP ``SOAPAction``
    header as received (None if absent; quotes and white space are allowed).
    Raises a :class:`~soapreceptor.errors.NotifyFault` subclass that says
    precisely what is wrong with the message.

    A message in MTurk's own layout is read without building a tree
    (:mod:`~soapreceptor.quickread`, less than half the time at ten events);
    any other, and any the quick reading would not accept, is parsed with
    lxml and read by :func:`read_notify`, with the same result.
    """
    layout = quickread.match(body)
    if layout is not None:
        notification = _read_layout(layout, soap_action)
        if notification is not None:
            return notification
    envelope = parse_envelope(body)
    header, notify = split_envelope(envelope)
    return read_notify(notify, header=header, soap_action=soap_action)


def _read_layout(layout: quickread.Layout, soap_action: str | None) -> Notification | None:
    """:func:`read_notify` for a message in MTurk's layout (:mod:`~soapreceptor.quickread`), or None.

    None wherever :func:`read_notify` would refuse the message: it then reads
    it again, and says why. Each step is :func:`read_notify`'s own, on texts
    instead of elements (tests/test_quickread.py holds the two together).
    """
    ns_version = _NAMESPACE_VERSIONS.get(layout.namespace)
    if ns_version is None:
        return None
    try:
        claims = _soap_action_claims(soap_action)
        if layout.header is not None:
            namespace, text = layout.header
            block = _wsdl_claim(text, f"SOAP header {_show_qname(f'{{{namespace}}}WSDL')}")
            claims += [] if block is None else [block]
        claim = _agreed(claims) or _VersionClaim(ns_version, "namespace")
    except errors.NotifyFault:
        return None  # an unknown version, or claims that disagree
    if claim.version != ns_version or layout.version.strip() != claim.version:
        return None
    events: list[Event] = []
    try:
        timestamp_value = parse_xsd_datetime(layout.timestamp)
        for event_type, event_time, hit_type_id, hit_id, assignment_id in layout.events:
            if not event_type:
                return None
            event_time_value = parse_xsd_datetime(event_time) if event_time else None
            # Positional, in Event's field order, as _read_event builds it.
            events.append(
                Event(
                    event_type,
                    event_time_value,
                    hit_type_id or None,
                    hit_id or None,
                    assignment_id or None,
                    claim.version,
                )
            )
    except ValueError:
        return None  # a Timestamp or an EventTime that is not an xsd:dateTime
    return Notification(
        version=claim.version,
        version_source=claim.source,
        timestamp=layout.timestamp,
        timestamp_value=timestamp_value,
        signature=layout.signature or None,
        events=tuple(events),
    )


def parse_envelope(body: bytes) -> etree._Element:
    """Parse ``body`` into its root element with the hardened parser; refuse any DTD."""
    if not body.strip():
        raise errors.MalformedMessage("the request body is empty; expected a SOAP 1.1 envelope")
    parser = _parser()
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise errors.MalformedMessage(f"the request body is not well-formed XML: {exc.msg}") from None
    # libxml2 lets an undeclared prefix through as an error it recovers from
    # (the tag stays "soapenv:Envelope"); a namespace-less reading of a SOAP
    # message is no reading at all.
    for entry in parser.error_log:
        if entry.domain_name == "NAMESPACE" and entry.level_name in ("ERROR", "FATAL"):
            raise errors.MalformedMessage(f"the request body is not namespace-well-formed XML: {entry.message}")
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise errors.MalformedMessage("a DOCTYPE is not allowed in a SOAP message")
    # SOAP 1.1 section 3: "A SOAP message MUST NOT contain Processing Instructions."
    if any(True for _ in root.iter(etree.PI)) or any(
        isinstance(node, etree._ProcessingInstruction) for node in root.itersiblings(preceding=True)
    ):
        raise errors.MalformedMessage("processing instructions are not allowed in a SOAP message (SOAP 1.1, section 3)")
    return root


def split_envelope(envelope: etree._Element) -> tuple[etree._Element | None, etree._Element]:
    """Return the SOAP Header (or None) and the single element inside the Body, checked to be ``Notify``."""
    tag = envelope.tag
    if tag != _ENVELOPE:
        if isinstance(tag, str) and tag.endswith("}Envelope"):
            expected = "SOAP 1.1" if tag == f"{{{SOAP12_ENV}}}Envelope" else "a SOAP"
            raise errors.EnvelopeVersionMismatch(
                f"the envelope is in namespace {_qname_ns(tag)!r}, which is not {expected} envelope "
                f"this service speaks; send a SOAP 1.1 envelope ({SOAP11_ENV})"
            )
        raise errors.MalformedMessage(f"the document element is {_show_tag(envelope)}, not a SOAP 1.1 Envelope")
    header: etree._Element | None = None
    body: etree._Element | None = None
    for child in _elements(envelope):
        if child.tag == _HEADER and header is None and body is None:
            header = child
        elif child.tag == _BODY and body is None:
            body = child
        else:
            raise errors.MalformedMessage(
                f"unexpected {_show_tag(child)} in the Envelope; a SOAP 1.1 envelope holds "
                "an optional Header, then one Body"
            )
    if body is None:
        raise errors.MalformedMessage("the SOAP envelope has no Body")
    entries = list(_elements(body))
    if not entries:
        raise errors.MalformedMessage("the SOAP Body is empty; expected a Notify element")
    if len(entries) > 1:
        raise errors.MalformedMessage(f"the SOAP Body holds {len(entries)} elements; a Notify call has exactly one")
    notify = entries[0]
    if etree.QName(notify).localname != versions.OPERATION:
        raise errors.UnknownOperation(
            f"the SOAP Body holds {_show_tag(notify)}; this service has one operation, Notify"
        )
    return header, notify


def read_notify(
    notify: etree._Element, *, header: etree._Element | None = None, soap_action: str | None = None
) -> Notification:
    """Build a :class:`Notification` from a ``Notify`` element and the header it came with."""
    namespace = _namespace(notify)
    ns_version = _NAMESPACE_VERSIONS.get(namespace or "") or versions.version_from_namespace(namespace)
    if ns_version is None:
        raise errors.UnknownVersion(
            f"Notify is in namespace {namespace!r}, which is not an MTurk notification namespace; "
            f"expected {versions.namespace(versions.DEFAULT_VERSION)!r} or another supported version "
            f"({', '.join(versions.VERSIONS)})"
        )
    _require_known(ns_version, "the Notify namespace")
    claim = _header_version(header, soap_action) or _VersionClaim(ns_version, "namespace")
    if claim.version != ns_version:
        raise errors.VersionMismatch(
            f"the message was sent under version {claim.version} ({claim.source}) but Notify is "
            f"in the namespace of version {ns_version}"
        )

    tags = _tags(namespace)
    fields: dict[str, etree._Element] = {}
    event_elements: list[etree._Element] = []
    for child in notify:
        name = tags.get(child.tag)
        if name is None:
            name = _other_name(child, namespace)
            if name is None:
                continue
        if name == "Event":
            event_elements.append(child)
        elif name in ("Signature", "Timestamp", "Version"):
            if name in fields:
                raise errors.MalformedMessage(f"Notify has more than one {name} element")
            fields[name] = child
        # Anything else is ignored: a later MTurk release may add elements,
        # and refusing them would lose the events of a valid notification.

    if "Timestamp" not in fields:
        raise errors.MalformedMessage("Notify has no Timestamp element")
    if "Version" not in fields:
        raise errors.MalformedMessage("Notify has no Version element")
    declared = _quick_text(fields["Version"], "Version").strip()
    if declared != claim.version:
        raise errors.VersionMismatch(
            f"<Version> says {_preview(declared)} but the message was sent under version "
            f"{claim.version} ({claim.source})"
        )
    timestamp = _signed_text(fields["Timestamp"], "Timestamp")
    try:
        timestamp_value = parse_xsd_datetime(timestamp)
    except ValueError as exc:
        raise errors.MalformedMessage(f"Timestamp: {exc}") from None
    signature_element = fields.get("Signature")
    signature = None
    if signature_element is not None and signature_element.get(_NIL, "").strip() not in ("true", "1"):
        signature = _signed_text(signature_element, "Signature") or None

    if not event_elements:
        raise errors.MalformedMessage("Notify carries no Event; a notification has at least one")
    full = _has_dtd(notify)
    events = tuple(
        _read_event(element, namespace, claim.version, index, tags=tags, full=full)
        for index, element in enumerate(event_elements, start=1)
    )
    return Notification(
        version=claim.version,
        version_source=claim.source,
        timestamp=timestamp,
        timestamp_value=timestamp_value,
        signature=signature,
        events=events,
    )


def _header_version(header: etree._Element | None, soap_action: str | None) -> _VersionClaim | None:
    """The version named by a WSDL URL in the SOAPAction or in a SOAP Header child, if any."""
    claims = _soap_action_claims(soap_action)
    if header is not None:
        for block in _elements(header):
            claim = _wsdl_claim(_joined_text(block), f"SOAP header {_show_tag(block)}") if len(block) == 0 else None
            if claim is not None:
                claims.append(claim)
            elif block.get(_MUST_UNDERSTAND, "").strip() in ("1", "true"):
                raise errors.MustUnderstand(
                    f"SOAP header {_show_tag(block)} is marked mustUnderstand and this service does not understand it"
                )
    return _agreed(claims)


def _soap_action_claims(soap_action: str | None) -> list[_VersionClaim]:
    """The version claimed by a WSDL URL in the HTTP SOAPAction header, as a list of none or one."""
    claim = None if soap_action is None else _wsdl_claim(soap_action.strip().strip('"'), "SOAPAction")
    return [] if claim is None else [claim]


def _wsdl_claim(text: str, where: str) -> _VersionClaim | None:
    """The version named by ``text`` if it is a WSDL URL (found ``where``), refused if unknown; else None."""
    version = versions.version_from_wsdl_url(text)
    if version is None:
        return None
    _require_known(version, f"the WSDL URL in {where}")
    return _VersionClaim(version, f"WSDL URL in {where}")


def _agreed(claims: list[_VersionClaim]) -> _VersionClaim | None:
    """The first of ``claims`` (None if there is none), once all are seen to name the same version."""
    for other in claims[1:]:
        if other.version != claims[0].version:
            raise errors.VersionMismatch(
                f"the message names version {claims[0].version} ({claims[0].source}) and "
                f"version {other.version} ({other.source})"
            )
    return claims[0] if claims else None


def _read_event(
    element: etree._Element,
    namespace: str | None,
    version: str,
    index: int,
    *,
    tags: Mapping[str, str] | None = None,
    full: bool | None = None,
) -> Event:
    """One ``Event`` of a Notify; ``tags`` is ``_tags(namespace)`` and ``full`` is ``_has_dtd(element)``."""
    if tags is None:
        tags = _tags(namespace)
    if full is None:
        full = _has_dtd(element)
    # One pass over the children, all of them, before any content is judged: a
    # duplicate is refused before anything is said about a field's content. A
    # child holding only text and CDATA, with no attribute, is read on the way
    # (its text is what _optional_text would return, and reading it cannot
    # fail); any other child is kept as is, for the full reading in field order,
    # and so is every child of a document with a DTD (see _has_dtd).
    texts: dict[str, str | None] = {}
    others: dict[str, etree._Element] = {}
    for child in element:
        name = tags.get(child.tag)
        if name is None:
            name = _other_name(child, namespace)
            if name is None:
                continue
        if name in texts or name in others:
            raise errors.MalformedMessage(f"Event {index} has more than one {name} element")
        # len() counts element, comment, instruction and entity children, not text or CDATA.
        if len(child) or child.keys() or full:
            others[name] = child
        else:
            texts[name] = child.text or None
    if others:
        return _read_event_fully(texts, others, version, index)
    event_type = texts.get("EventType")
    if not event_type:
        raise errors.MalformedMessage(f"Event {index} has no EventType")
    event_time_text = texts.get("EventTime")
    event_time = None
    if event_time_text is not None:
        try:
            event_time = parse_xsd_datetime(event_time_text)
        except ValueError as exc:
            raise errors.MalformedMessage(f"Event {index} EventTime: {exc}") from None
    # Positional, in Event's field order (tests/test_wire_fastpath.py holds it to
    # that order): keyword arguments would add a tenth to the reading of an event.
    return Event(event_type, event_time, texts.get("HITTypeId"), texts.get("HITId"), texts.get("AssignmentId"), version)


def _read_event_fully(
    texts: Mapping[str, str | None], others: Mapping[str, etree._Element], version: str, index: int
) -> Event:
    """The end of :func:`_read_event` for an event with a field that is not plain text.

    ``texts`` holds the text of each plain field, ``others`` the element of
    any other; the fields are judged in the order they always were, so the
    first fault found is the one reported.
    """

    def field(name: str) -> str | None:
        found = others.get(name)
        return texts.get(name) if found is None else _optional_text(found, f"Event {index} {name}")

    event_type = field("EventType")
    if not event_type:
        raise errors.MalformedMessage(f"Event {index} has no EventType")
    event_time_text = field("EventTime")
    event_time = None
    if event_time_text is not None:
        try:
            event_time = parse_xsd_datetime(event_time_text)
        except ValueError as exc:
            raise errors.MalformedMessage(f"Event {index} EventTime: {exc}") from None
    return Event(
        event_type=event_type,
        event_time=event_time,
        hit_type_id=field("HITTypeId"),
        hit_id=field("HITId"),
        assignment_id=field("AssignmentId"),
        version=version,
    )


def render_response(version: str) -> bytes:
    """The answer to an accepted message: an empty ``NotifyResponse`` in the request's namespace."""
    return _RESPONSES[version]


def render_fault(fault: errors.NotifyFault) -> bytes:
    """A SOAP 1.1 Fault envelope for ``fault``."""
    envelope = etree.Element(_ENVELOPE, nsmap={"soapenv": SOAP11_ENV})
    body = etree.SubElement(envelope, _BODY)
    element = etree.SubElement(body, f"{{{SOAP11_ENV}}}Fault")
    # faultcode and faultstring are unqualified, as SOAP 1.1 section 4.4 shows them.
    etree.SubElement(element, "faultcode").text = f"soapenv:{fault.faultcode}"
    etree.SubElement(element, "faultstring").text = _xml_safe(fault.faultstring)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _render_response(version: str) -> bytes:
    envelope = etree.Element(_ENVELOPE, nsmap={"soapenv": SOAP11_ENV})
    body = etree.SubElement(envelope, _BODY)
    namespace = versions.namespace(version)
    nsmap: Any = {None: namespace}  # a default namespace, as in Amazon's own messages
    etree.SubElement(body, f"{{{namespace}}}NotifyResponse", nsmap=nsmap)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


# Built once: the answer to an accepted message never varies within a version.
_RESPONSES: Final[dict[str, bytes]] = {version: _render_response(version) for version in versions.VERSIONS}


def _require_known(version: str, where: str) -> None:
    if not versions.is_known(version):
        raise errors.UnknownVersion(
            f"{where} names notification version {version}, which this receptor does not accept; "
            f"supported versions: {', '.join(versions.VERSIONS)}"
        )


def _tags(namespace: str | None) -> Mapping[str, str]:
    """The tag table for ``namespace``: built once for each known version, on demand for any other."""
    table = _TAG_TABLES.get(namespace) if namespace is not None else None
    return table if table is not None else _tag_table(namespace)


def _namespace(element: etree._Element) -> str | None:
    """``etree.QName(element).namespace``, without building a QName for the usual ``{namespace}local`` tag."""
    tag = element.tag
    if isinstance(tag, str) and tag.startswith("{"):
        end = tag.find("}")
        if end > 1 and end < len(tag) - 1:
            return tag[1:end]
    return etree.QName(element).namespace


def _other_name(child: etree._Element, namespace: str | None) -> str | None:
    """The local name of a child whose tag is not in the tag table, or None if it is no content.

    None for comments, processing instructions and entity references, and for
    elements of another namespace; an element of the Notify namespace (or none)
    that this module does not read still counts, so that a duplicate is seen.
    """
    if not isinstance(child.tag, str) or not _in_notify_namespace(child, namespace):
        return None
    return etree.QName(child).localname


def _has_dtd(element: etree._Element) -> bool:
    """True if the document of ``element`` has a DTD, internal or external.

    A DTD can give an element attributes by default (``xsi:nil`` among them):
    ``get()`` sees those, ``keys()`` does not, so the quick reading of a field
    with no attribute is not used under a DTD. :func:`parse_envelope` refuses
    any DTD; this is for trees parsed some other way and handed to read_notify.
    """
    docinfo: Any = element.getroottree().docinfo
    return docinfo.internalDTD is not None or docinfo.externalDTD is not None


def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    """Child elements only: comments and processing instructions are not content."""
    for child in parent:
        if isinstance(child.tag, str):
            yield child


def _in_notify_namespace(element: etree._Element, namespace: str | None) -> bool:
    # The WSDL says qualified; unqualified children are accepted too, because
    # hand-written senders often get this wrong and refusing would lose events.
    child_ns = etree.QName(element).namespace
    return child_ns == namespace or child_ns is None


def _text(element: etree._Element, what: str) -> str:
    """An element's character content (CDATA included, comments skipped), refusing child elements."""
    if any(True for _ in _elements(element)):
        raise errors.MalformedMessage(f"{what} must hold text, not elements")
    return _joined_text(element)


def _quick_text(element: etree._Element, what: str) -> str:
    """:func:`_text`, read directly for an element with no child nodes but text and CDATA."""
    # len() counts element, comment, instruction and entity children; .text is then all the text.
    return element.text or "" if not len(element) else _text(element, what)


def _joined_text(element: etree._Element) -> str:
    return "".join(str(part) for part in element.itertext())


def _signed_text(element: etree._Element, what: str) -> str:
    """The text of an element the signature depends on: plain text (CDATA allowed), nothing else.

    A comment inside the Timestamp would leave two readings of "the text as
    received" (with or without it); MTurk never sent one, so none is accepted.
    """
    if len(element):
        raise errors.MalformedMessage(f"{what} must hold only text, not elements, comments or instructions")
    return element.text or ""


def _optional_text(element: etree._Element, what: str) -> str | None:
    """Like :func:`_text`, but an empty or ``xsi:nil`` element means "absent"."""
    if element.get(_NIL, "").strip() in ("true", "1"):
        return None
    return _text(element, what) or None


def _show_tag(element: etree._Element) -> str:
    return _show_qname(str(element.tag))


def _show_qname(tag: str) -> str:
    namespace, brace, localname = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return f"<{_preview(localname)[1:-1]}> in namespace {namespace!r}" if brace else f"<{_preview(tag)[1:-1]}>"


def _qname_ns(tag: str) -> str:
    return tag[1:].partition("}")[0]


def _preview(value: str, limit: int = 64) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot carry, so any message can become a faultstring."""
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r" or "\x20" <= ch <= "\ud7ff" or "\ue000" <= ch <= "\ufffd" or ch >= "\U00010000"
    )


def read_answer(status: int, body: bytes) -> tuple[str | None, str | None]:
    """Read a receptor's answer: ``(None, None)`` for a ``NotifyResponse``, else ``(faultcode, faultstring)``.

    ``faultcode`` loses its namespace prefix (``Client.SignatureMismatch``).
    An answer that is neither raises ValueError saying what came back.
    """
    try:
        envelope = parse_envelope(body)
        _header, entry = _answer_entry(envelope)
    except errors.NotifyFault as exc:
        raise ValueError(f"HTTP {status} with a body that is not a SOAP answer: {exc.faultstring}") from None
    if entry.tag == f"{{{SOAP11_ENV}}}Fault":
        code = (entry.findtext("faultcode") or "").strip()
        return code.rpartition(":")[2] or "Server", (entry.findtext("faultstring") or "").strip()
    if etree.QName(entry).localname == "NotifyResponse" and status == 200:
        return None, None
    raise ValueError(f"HTTP {status} with {_show_tag(entry)} instead of a NotifyResponse or a Fault")


def _answer_entry(envelope: etree._Element) -> tuple[etree._Element | None, etree._Element]:
    if envelope.tag != _ENVELOPE:
        raise errors.MalformedMessage(f"the document element is {_show_tag(envelope)}, not a SOAP 1.1 Envelope")
    body = envelope.find(_BODY)
    entries = [] if body is None else list(_elements(body))
    if len(entries) != 1:
        raise errors.MalformedMessage("the SOAP Body does not hold exactly one element")
    return envelope.find(_HEADER), entries[0]
