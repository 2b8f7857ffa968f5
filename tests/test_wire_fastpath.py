"""The fast reading of Notify must be the slow reading, faster: same results, same faults, same words.

The first half of this module is a frozen copy of ``soapreceptor.wire.read_notify`` and of what it
called (with ``soapreceptor.timestamps.parse_xsd_datetime``) as they were before the fast paths were
added, verbatim. The tests compare the package's reading with that reference on the recorded
fixtures, on hypothesis-generated messages and timestamps, and on hand-written odd cases: the same
Notification (field by field, types and time zones included) or the same fault class and faultstring.
Do not "fix" or tidy the reference: it is the specification the fast code is held to.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from soapreceptor import errors, fixtures, timestamps, versions, wire
from soapreceptor.model import Event, Notification
from soapreceptor.wire import SOAP11_ENV, XSI
from tests.support import REPO
from tests.test_properties import mutated

# -- the frozen reference (verbatim copies of the code before the fast paths) --------------------------

_MUST_UNDERSTAND: Final[str] = f"{{{SOAP11_ENV}}}mustUnderstand"


_NIL: Final[str] = f"{{{XSI}}}nil"


@dataclass(frozen=True, slots=True)
class _VersionClaim:
    version: str
    source: str


def read_notify(
    notify: etree._Element, *, header: etree._Element | None = None, soap_action: str | None = None
) -> Notification:
    """Build a :class:`Notification` from a ``Notify`` element and the header it came with."""
    namespace = etree.QName(notify).namespace
    ns_version = versions.version_from_namespace(namespace)
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

    fields: dict[str, etree._Element] = {}
    event_elements: list[etree._Element] = []
    for child in _elements(notify):
        if not _in_notify_namespace(child, namespace):
            continue
        name = etree.QName(child).localname
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
    declared = _text(fields["Version"], "Version").strip()
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
    events = tuple(
        _read_event(element, namespace, claim.version, index) for index, element in enumerate(event_elements, start=1)
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
    claims: list[_VersionClaim] = []
    if soap_action is not None:
        version = versions.version_from_wsdl_url(soap_action.strip().strip('"'))
        if version is not None:
            _require_known(version, "the WSDL URL in SOAPAction")
            claims.append(_VersionClaim(version, "WSDL URL in SOAPAction"))
    if header is not None:
        for block in _elements(header):
            version = None
            if len(block) == 0:
                version = versions.version_from_wsdl_url(_joined_text(block))
            if version is not None:
                _require_known(version, f"the WSDL URL in SOAP header {_show_tag(block)}")
                claims.append(_VersionClaim(version, f"WSDL URL in SOAP header {_show_tag(block)}"))
            elif block.get(_MUST_UNDERSTAND, "").strip() in ("1", "true"):
                raise errors.MustUnderstand(
                    f"SOAP header {_show_tag(block)} is marked mustUnderstand and this service does not understand it"
                )
    for other in claims[1:]:
        if other.version != claims[0].version:
            raise errors.VersionMismatch(
                f"the message names version {claims[0].version} ({claims[0].source}) and "
                f"version {other.version} ({other.source})"
            )
    return claims[0] if claims else None


def _read_event(element: etree._Element, namespace: str | None, version: str, index: int) -> Event:
    values: dict[str, etree._Element] = {}
    for child in _elements(element):
        if not _in_notify_namespace(child, namespace):
            continue
        name = etree.QName(child).localname
        if name in values:
            raise errors.MalformedMessage(f"Event {index} has more than one {name} element")
        values[name] = child

    def field(name: str) -> str | None:
        found = values.get(name)
        return None if found is None else _optional_text(found, f"Event {index} {name}")

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


def _require_known(version: str, where: str) -> None:
    if not versions.is_known(version):
        raise errors.UnknownVersion(
            f"{where} names notification version {version}, which this receptor does not accept; "
            f"supported versions: {', '.join(versions.VERSIONS)}"
        )


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
    tag = str(element.tag)
    namespace, brace, localname = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return f"<{_preview(localname)[1:-1]}> in namespace {namespace!r}" if brace else f"<{_preview(tag)[1:-1]}>"


def _preview(value: str, limit: int = 64) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


_XSD_DATETIME: Final[re.Pattern[str]] = re.compile(
    r"(?P<year>-?\d{4,})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?",
    re.ASCII,
)


def parse_xsd_datetime(text: str) -> dt.datetime:
    """Parse an xsd:dateTime into an aware UTC datetime.

    Surrounding white space is ignored (the type's whitespace facet is
    ``collapse``). A value without a zone is taken as UTC, which is what MTurk
    always sent. Raises ValueError with a readable reason for anything that is
    not an xsd:dateTime or that Python cannot represent (years outside 1-9999).
    """
    value = text.strip()
    match = _XSD_DATETIME.fullmatch(value)
    if match is None:
        raise ValueError(f"{_preview(value)} is not an xsd:dateTime (expected e.g. 2006-05-23T23:22:30Z)")
    year = int(match["year"])
    if not 1 <= year <= 9999:
        raise ValueError(f"{_preview(value)} has year {year}, outside 0001-9999")
    hour = int(match["hour"])
    minute, second = int(match["minute"]), int(match["second"])
    fraction = match["fraction"] or ""
    # XML Schema allows 24:00:00 as the first instant of the next day.
    end_of_day = hour == 24 and minute == 0 and second == 0 and not fraction.strip("0")
    try:
        moment = dt.datetime(
            year,
            int(match["month"]),
            int(match["day"]),
            0 if end_of_day else hour,
            minute,
            second,
            int(fraction[:6].ljust(6, "0")) if fraction else 0,
            tzinfo=_zone(match["zone"]),
        )
        if end_of_day:
            moment += dt.timedelta(days=1)
        return moment.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{_preview(value)} is not a valid date and time: {exc}") from None


def _zone(text: str | None) -> dt.timezone:
    if text is None or text == "Z":
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59 or (hours == 14 and minutes):
        raise ValueError(f"time zone offset {text} is outside -14:00..+14:00")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


# -- comparing the package with the reference --------------------------------------------------------------

BUDGET = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
FIXTURES = fixtures.load([REPO / "tests" / "fixtures"])
MTURK_NS = versions.namespace(versions.DEFAULT_VERSION)
FOREIGN_NS = "urn:example:foreign"
EVENT_FIELDS = ("EventType", "EventTime", "HITTypeId", "HITId", "AssignmentId")
LENIENT = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)


def snapshot(value: object) -> object:
    """A value that compares equal only if ``value`` is the same down to types and time zones."""
    if isinstance(value, Notification | Event):
        return (type(value), tuple(snapshot(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, tuple):
        return tuple(snapshot(item) for item in value)
    if isinstance(value, dt.datetime):
        return (dt.datetime, value.isoformat(), repr(value.tzinfo), value.tzinfo is dt.UTC, value.fold)
    return (type(value), value)


def outcome(call: Callable[[], object]) -> object:
    """What ``call`` did: its result, or the exception's class and words."""
    try:
        result = call()
    except errors.NotifyFault as fault:
        return ("fault", type(fault), fault.faultstring)
    except Exception as exc:  # any other escape must be the same escape
        return ("error", type(exc), str(exc))
    return ("ok", snapshot(result))


def same_reading(notify: etree._Element, header: etree._Element | None, soap_action: str | None) -> object:
    expected = outcome(lambda: read_notify(notify, header=header, soap_action=soap_action))
    assert outcome(lambda: wire.read_notify(notify, header=header, soap_action=soap_action)) == expected
    return expected


def check_body(body: bytes, soap_action: str | None = None) -> object:
    """Compare the readings of ``body``; None when the envelope itself is refused (code both share)."""
    try:
        header, notify = wire.split_envelope(wire.parse_envelope(body))
    except errors.NotifyFault:
        return None
    expected = same_reading(notify, header, soap_action)
    assert outcome(lambda: wire.parse_notify(body, soap_action)) == expected
    return expected


def check_lenient(document: bytes) -> object:
    """Compare the readings of a tree the hardened parser would refuse (PIs, entity references)."""
    root = etree.fromstring(document, LENIENT)
    body = root.find(f"{{{SOAP11_ENV}}}Body")
    assert body is not None
    header = root.find(f"{{{SOAP11_ENV}}}Header")
    return same_reading(body[0], header, None)


def envelope(notify_inner: str, *, namespace: str = MTURK_NS, doctype: str = "", header: str = "") -> bytes:
    return (
        f"{doctype}<s:Envelope xmlns:s='{SOAP11_ENV}' xmlns:xsi='{XSI}' xmlns:f='{FOREIGN_NS}'"
        f" xmlns:m='{MTURK_NS}' xmlns:o='{versions.namespace('2006-10-31')}'>{header}"
        f"<s:Body><Notify xmlns='{namespace}'>{notify_inner}</Notify></s:Body></s:Envelope>"
    ).encode()


GOOD_HEAD = "<Signature>c2ln</Signature><Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>2006-05-05</Version>"
GOOD_EVENT = {
    "EventType": "AssignmentAccepted",
    "EventTime": "2006-04-21T18:55:23Z",
    "HITTypeId": "KDSFO4455LKDAF3",
    "HITId": "KDSFO4455LKDAF3HIT",
    "AssignmentId": "KDSFO4455LKDAF3ASSIGNMENT",
}


def event(**replace: str) -> str:
    """An Event whose fields are GOOD_EVENT's, with ``replace``'d ones given as raw XML (empty: left out)."""
    parts = []
    for name in EVENT_FIELDS:
        raw = replace.get(name, f"<{name}>{GOOD_EVENT[name]}</{name}>")
        parts.append(raw)
    return "<Event>" + "".join(parts) + replace.get("extra", "") + "</Event>"


def test_the_reference_reads_the_good_message() -> None:
    result = check_body(envelope(GOOD_HEAD + event() + event()))
    assert isinstance(result, tuple)
    assert result[0] == "ok"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.name.removeprefix(str(REPO / "tests" / "fixtures") + "/"))
def test_recorded_fixtures(fixture: fixtures.Fixture) -> None:
    assert check_body(fixture.body, fixture.header("SOAPAction")) is not None


def test_event_fields_are_in_the_order_wire_passes_them() -> None:
    """wire builds Event positionally, for speed; a reordered Event would swap its values."""
    assert [f.name for f in dataclasses.fields(Event)] == [
        "event_type",
        "event_time",
        "hit_type_id",
        "hit_id",
        "assignment_id",
        "version",
    ]


def test_there_are_recorded_fixtures() -> None:
    assert len(FIXTURES) >= 35


@pytest.mark.parametrize("events", [1, 2, 10, 100])
def test_amazon_shaped_batches(events: int) -> None:
    body = fixtures.amazon_envelope(
        signature="c2ln",
        timestamp="2006-05-23T23:22:30Z",
        events=[dict(GOOD_EVENT, HITId=f"HIT{n}") for n in range(events)],
    )
    result = check_body(body, '"http://soap.amazon.com"')
    assert isinstance(result, tuple)
    assert result[0] == "ok"


ODD_EVENTS: Final[list[str]] = [
    event(),
    event(HITId="<HITId>AB<!-- x -->CD</HITId>"),
    event(HITId="<HITId><!-- x -->ABCD</HITId>"),
    event(HITId="<HITId>ABCD<!-- x --></HITId>"),
    event(HITId="<HITId><!-- x --></HITId>"),
    event(HITId="<HITId>AB<![CDATA[C<D]]>EF</HITId>"),
    event(HITId="<HITId><![CDATA[]]></HITId>"),
    event(HITId="<HITId><![CDATA[ ]]></HITId>"),
    event(HITId="<HITId>  spaced\n\t</HITId>"),
    event(HITId="<HITId>&amp;&#x41;&lt;</HITId>"),
    event(HITId="<HITId/>"),
    event(HITId="<HITId></HITId>"),
    event(HITId="<HITId>A<b>B</b>C</HITId>"),
    event(HITId="<HITId><b/></HITId>"),
    event(HITId="<HITId><f:b>x</f:b></HITId>"),
    event(HITId="<HITId xsi:nil='true'>X</HITId>"),
    event(HITId="<HITId xsi:nil=' 1 '>X</HITId>"),
    event(HITId="<HITId xsi:nil='true'><b>X</b></HITId>"),
    event(HITId="<HITId xsi:nil='false'>X</HITId>"),
    event(HITId="<HITId xsi:nil='false'><b>X</b></HITId>"),
    event(HITId="<HITId nil='true'>X</HITId>"),
    event(HITId="<HITId f:nil='true'>X</HITId>"),
    event(HITId="<HITId xsi:type='xsd:string'>X</HITId>"),
    event(HITId="<f:HITId>X</f:HITId>"),
    event(HITId="<HITId xmlns=''>X</HITId>"),
    event(HITId="<m:HITId>X</m:HITId>"),
    event(HITId="<o:HITId>X</o:HITId>"),
    event(HITId="<HITId>X</HITId><HITId>Y</HITId>"),
    event(HITId="<HITId>X</HITId><HITId xmlns=''>Y</HITId>"),
    event(HITId="<HITId>X</HITId><f:HITId>Y</f:HITId>"),
    event(HITId="<HITId>X</HITId><m:HITId>Y</m:HITId>"),
    event(HITId="<HITId><b/></HITId><HITId>Y</HITId>"),
    event(extra="<Unknown>1</Unknown>"),
    event(extra="<Unknown>1</Unknown><Unknown>2</Unknown>"),
    event(extra="<Unknown>1</Unknown><Unknown xmlns=''>2</Unknown>"),
    event(extra="<f:Unknown>1</f:Unknown><f:Unknown>2</f:Unknown>"),
    event(extra="<Event>nested</Event>"),
    event(extra="<Event/><Event/>"),
    event(extra="<!-- trailing comment -->"),
    event(EventType=""),
    event(EventType="<EventType/>"),
    event(EventType="<EventType> </EventType>"),
    event(EventType="<EventType xsi:nil='true'>Ping</EventType>"),
    event(EventType="<EventType><b/></EventType>"),
    event(EventType="<EventType><b/></EventType>", EventTime="<EventTime>bad</EventTime>"),
    event(EventTime="<EventTime>bad</EventTime>", HITId="<HITId><b/></HITId>"),
    event(EventType="<EventType>Ping</EventType><EventType>Ping</EventType>", EventTime="<EventTime>x</EventTime>"),
    event(EventType="<f:EventType>Ping</f:EventType>"),
    event(EventType="<EventType>Some<!-- x -->NewType</EventType>"),
    event(EventTime=""),
    event(EventTime="<EventTime/>"),
    event(EventTime="<EventTime xsi:nil='true'/>"),
    event(EventTime="<EventTime>2006-04-21T18:55:23<!-- x -->Z</EventTime>"),
    event(EventTime="<EventTime><![CDATA[2006-04-21T18:55:23Z]]></EventTime>"),
    event(EventTime="<EventTime> 2006-04-21T18:55:23Z </EventTime>"),
    event(EventTime="<EventTime>2006-04-21T18:55:23z</EventTime>"),
    event(EventTime="<EventTime>2006-04-21T24:00:00Z</EventTime>"),
    event(EventTime="<EventTime>2006-04-21T24:00:01Z</EventTime>"),
    event(EventTime="<EventTime>2006-04-21T18:55:60Z</EventTime>"),
    event(EventTime="<EventTime>2006-02-30T18:55:23Z</EventTime>"),
    event(EventTime="<EventTime>0000-01-01T00:00:00Z</EventTime>"),
    event(EventTime="<EventTime>2006-04-21T18:55:23.5+02:00</EventTime>"),
    event(EventTime="<EventTime>2006-04-21T18:55:23</EventTime>"),
    event(EventType="", EventTime="", HITTypeId="", HITId="", AssignmentId=""),
    "<Event/>",
    "<Event>Ping</Event>",
    "<Event><!-- only a comment --></Event>",
    "<Event><EventType>Ping</EventType></Event>",
    "<Event xsi:nil='true'><EventType>Ping</EventType></Event>",
    "<m:Event><m:EventType>Ping</m:EventType></m:Event>",
    "<Event xmlns=''><EventType>Ping</EventType></Event>",
    "<f:Event><EventType>Ping</EventType></f:Event>",
    "<o:Event><EventType>Ping</EventType></o:Event>",
]


@pytest.mark.parametrize("inner", ODD_EVENTS)
def test_odd_events(inner: str) -> None:
    assert check_body(envelope(GOOD_HEAD + inner)) is not None
    assert check_body(envelope(GOOD_HEAD + event() + inner + event())) is not None
    assert check_body(envelope(GOOD_HEAD + event(EventType="<EventType/>") + inner)) is not None


STAMPED = "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>2006-05-05</Version>"
ODD_HEADS: Final[list[str]] = [
    GOOD_HEAD,
    STAMPED,
    "<Signature/>" + STAMPED,
    "<Signature xsi:nil='true'>c2ln</Signature>" + STAMPED,
    "<Signature xsi:nil='1'><b/></Signature>" + STAMPED,
    "<Signature xsi:nil='false'>c2ln</Signature>" + STAMPED,
    "<Signature>c2<!-- x -->ln</Signature>" + STAMPED,
    "<Signature><![CDATA[c2ln]]></Signature>" + STAMPED,
    "<Signature>c2ln</Signature><Signature>c2ln</Signature><Timestamp>2006-05-23T23:22:30Z</Timestamp>"
    "<Version>2006-05-05</Version>",
    "<Signature>c2ln</Signature><f:Signature>c2ln</f:Signature><Timestamp>2006-05-23T23:22:30Z</Timestamp>"
    "<Version>2006-05-05</Version>",
    "<Signature>c2ln</Signature><Signature xmlns=''>c2ln</Signature><Timestamp>2006-05-23T23:22:30Z</Timestamp>"
    "<Version>2006-05-05</Version>",
    "<Signature>c2ln</Signature><Version>2006-05-05</Version>",
    "<Signature>c2ln</Signature><Timestamp>2006-05-23T23:22:30Z</Timestamp>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp>" + STAMPED,
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>2006-05-05</Version><Version>2006-05-05</Version>",
    "<Timestamp><b/></Timestamp><Version>2006-05-05</Version>",
    "<Timestamp>2006-05-23T23:22:30<!-- x -->Z</Timestamp><Version>2006-05-05</Version>",
    "<Timestamp><![CDATA[2006-05-23T23:22:30Z]]></Timestamp><Version>2006-05-05</Version>",
    "<Timestamp> 2006-05-23T23:22:30Z\n</Timestamp><Version>2006-05-05</Version>",
    "<Timestamp>2006-05-23T23:22:30.123456789-05:00</Timestamp><Version>2006-05-05</Version>",
    "<Timestamp>2006-05-23T24:00:00Z</Timestamp><Version>2006-05-05</Version>",
    "<Timestamp>2006-05-23T23:22:30z</Timestamp><Version>2006-05-05</Version>",
    "<Timestamp/><Version>2006-05-05</Version>",
    "<Timestamp xsi:nil='true'/><Version>2006-05-05</Version>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version> 2006-05-05 </Version>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>2006-<!-- x -->05-05</Version>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version><![CDATA[2006-05-05]]></Version>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version><v>2006-05-05</v></Version>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>2006-10-31</Version>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version/>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version xmlns=''>2006-05-05</Version>",
    "<Timestamp>2006-05-23T23:22:30Z</Timestamp><f:Version>2006-05-05</f:Version>",
    "<m:Timestamp>2006-05-23T23:22:30Z</m:Timestamp><o:Version>2006-05-05</o:Version><Version>2006-05-05</Version>",
    "<!-- c --><Timestamp>2006-05-23T23:22:30Z</Timestamp><!-- c --><Version>2006-05-05</Version><!-- c -->",
    "<Unknown/><Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>2006-05-05</Version><EventType>Ping</EventType>",
]


@pytest.mark.parametrize("head", ODD_HEADS)
def test_odd_heads(head: str) -> None:
    assert check_body(envelope(head + event())) is not None
    assert check_body(envelope(event() + head)) is not None
    assert check_body(envelope(head)) is not None
    assert check_body(envelope(head + event(EventType=""))) is not None


@pytest.mark.parametrize(
    ("namespace", "soap_action", "header"),
    [
        (versions.namespace("2006-10-31"), None, ""),
        (versions.namespace("2006-10-31"), versions.wsdl_url("2006-10-31"), ""),
        (MTURK_NS, versions.wsdl_url("2006-10-31"), ""),
        (MTURK_NS, None, f"<s:Header><f:W>{versions.wsdl_url('2006-10-31')}</f:W></s:Header>"),
        (MTURK_NS, None, "<s:Header><f:W s:mustUnderstand='1'>x</f:W></s:Header>"),
        (versions.namespace("2099-01-01"), None, ""),
        ("urn:example:not-mturk", None, ""),
        ("", None, ""),
        (MTURK_NS, versions.wsdl_url("2099-01-01"), ""),
    ],
)
def test_versions_and_headers(namespace: str, soap_action: str | None, header: str) -> None:
    for head in (GOOD_HEAD, GOOD_HEAD.replace("2006-05-05", "2006-10-31")):
        assert check_body(envelope(head + event(), namespace=namespace, header=header), soap_action) is not None


LENIENT_EVENTS: Final[list[str]] = [
    event(HITId="<HITId>AB<?pi x?>CD</HITId>"),
    event(HITId="<HITId><?pi x?></HITId>"),
    event(HITId="<HITId>AB&ent;CD</HITId>"),
    event(HITId="<HITId>&ent;</HITId>"),
    event(EventTime="<EventTime>&stamp;</EventTime>"),
    event(extra="<?pi between fields?>"),
    event(extra="&ent;"),
]


@pytest.mark.parametrize("inner", LENIENT_EVENTS)
def test_trees_the_hardened_parser_refuses(inner: str) -> None:
    doctype = "<!DOCTYPE s:Envelope [<!ENTITY ent 'entity'><!ENTITY stamp '2006-04-21T18:55:23Z'>]>"
    assert check_lenient(envelope(GOOD_HEAD + inner, doctype=doctype)) is not None
    heads = [
        "<Timestamp>2006-05-23T23:22:30<?pi x?>Z</Timestamp><Version>2006-05-05</Version>",
        "<Timestamp>&stamp;</Timestamp><Version>2006-05-05</Version>",
        "<Signature>&ent;</Signature>" + STAMPED,
        "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>&ent;</Version>",
        "<Timestamp>2006-05-23T23:22:30Z</Timestamp><Version>2006-05-05<?pi x?></Version>",
    ]
    for head in heads:
        assert check_lenient(envelope(head + inner, doctype=doctype)) is not None


@pytest.mark.parametrize(
    "inner",
    [
        event(),
        event(HITId="<HITId>X</HITId>"),
        event(HITId="<HITId/>"),
        event(HITId="<HITId xsi:nil='false'>X</HITId>"),
        event(EventType="<EventType>Ping</EventType>"),
    ],
)
@pytest.mark.parametrize("signature", ["<Signature>c2ln</Signature>", "<Signature/>", ""])
def test_attribute_defaults_from_a_dtd(inner: str, signature: str) -> None:
    """``get()`` sees attributes a DTD gives by default, which ``keys()`` does not list."""
    doctype = (
        "<!DOCTYPE s:Envelope ["
        "<!ATTLIST HITId xsi:nil CDATA 'true'>"
        "<!ATTLIST EventType xsi:nil CDATA '1'>"
        "<!ATTLIST Signature xsi:nil CDATA 'true'>"
        "<!ATTLIST AssignmentId other CDATA 'x'>"
        "]>"
    )
    head = signature + STAMPED
    assert check_lenient(envelope(head + inner, doctype=doctype)) is not None
    assert check_lenient(envelope(head + event() + inner, doctype=doctype)) is not None


# -- generated messages --------------------------------------------------------------------------------------


@st.composite
def xsd_datetimes(draw: st.DrawFn) -> str:
    """Mostly MTurk's canonical form, with out-of-range parts, fractions, zones and padding mixed in."""
    year = draw(st.sampled_from([0, 1, 1969, 1970, 2006, 2038, 9999, 10000]) | st.integers(0, 9999))
    parts = [
        draw(st.sampled_from([1, 2, 12, 13, 0]) | st.integers(1, 12)),
        draw(st.sampled_from([1, 28, 29, 30, 31, 32, 0]) | st.integers(1, 28)),
        draw(st.sampled_from([0, 23, 24, 25]) | st.integers(0, 23)),
        draw(st.sampled_from([0, 59, 60]) | st.integers(0, 59)),
        draw(st.sampled_from([0, 59, 60, 61]) | st.integers(0, 59)),
    ]
    fraction = draw(st.sampled_from(["", "", "", "", ".0", ".5", ".000000", ".1234567", ".9999999", "."]))
    zone = draw(
        st.sampled_from(["Z", "Z", "Z", "Z", "", "z", "+00:00", "-00:00", "+02:00", "-05:30", "+14:00", "+14:01"])
    )
    sign = draw(st.sampled_from(["", "", "", "", "-", "+"]))
    pad = draw(st.sampled_from(["", "", "", "", " ", "\n", "\u00a0", "\u2003", "\ufeff"]))
    year_text = draw(st.sampled_from([f"{year:04d}", f"{year:04d}", f"{year:05d}", f"{year}"]))
    month, day, hour, minute, second = (f"{part:02d}" for part in parts)
    digits = draw(st.sampled_from(["ascii"] * 9 + ["arabic-indic", "fullwidth"]))
    text = f"{sign}{year_text}-{month}-{day}T{hour}:{minute}:{second}{fraction}{zone}"
    if digits == "arabic-indic":
        text = text.translate({0x30 + i: 0x660 + i for i in range(10)})
    elif digits == "fullwidth":
        text = text.translate({0x30 + i: 0xFF10 + i for i in range(10)})
    return pad + text + draw(st.sampled_from(["", "", pad]))


def ts_outcome(parse: Callable[[str], dt.datetime], text: str) -> object:
    try:
        return ("ok", snapshot(parse(text)))
    except ValueError as exc:
        return ("ValueError", str(exc))


@pytest.mark.parametrize(
    "text",
    [
        "2006-05-23T23:22:30Z",
        "2006-05-23T23:22:30z",
        "2006-05-23T23:22:30",
        "2006-05-23T23:22:30+00:00",
        "2006-05-23T23:22:30-00:00",
        "2006-05-23T23:22:30.000Z",
        "2006-05-23T23:22:30.1234567Z",
        "2006-05-23T24:00:00Z",
        "2006-05-23T24:00:00.000Z",
        "2006-05-23T24:00:01Z",
        "9999-12-31T24:00:00Z",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "-2006-05-23T23:22:30Z",
        "+2006-05-23T23:22:30Z",
        "2006-02-29T00:00:00Z",
        "2004-02-29T00:00:00Z",
        "2006-13-01T00:00:00Z",
        "2006-00-01T00:00:00Z",
        "2006-05-23T23:60:00Z",
        "2006-05-23T23:22:60Z",
        "2006-05-23 23:22:30Z",
        "2006-05-23t23:22:30Z",
        "20060523T232230Z",
        " 2006-05-23T23:22:30Z ",
        "\u00a02006-05-23T23:22:30Z",
        "2006-05-23T23:22:30Z\x00",
        "\u0662\u0660\u0660\u0666-05-23T23:22:30Z",
        "2006-05-23T23:22:30+14:01",
        "2006-05-23T23:22:30+1400",
        "",
        " ",
        "Z",
        "x" * 100,
    ],
)
def test_timestamp_cases(text: str) -> None:
    assert ts_outcome(timestamps.parse_xsd_datetime, text) == ts_outcome(parse_xsd_datetime, text)


@BUDGET
@given(st.one_of(xsd_datetimes(), st.text(max_size=40), st.from_regex(_XSD_DATETIME, fullmatch=True)))
def test_generated_timestamps(text: str) -> None:
    assert ts_outcome(timestamps.parse_xsd_datetime, text) == ts_outcome(parse_xsd_datetime, text)


_XML_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<&") | st.sampled_from("\t\n\r "),
    max_size=12,
)
_CONTENT = st.one_of(
    st.sampled_from(
        [
            "",
            "Ping",
            "AssignmentAccepted",
            " padded ",
            "AB<!-- x -->CD",
            "<!-- x -->",
            "AB<![CDATA[C<D]]>EF",
            "<![CDATA[]]>",
            "<b>x</b>",
            "x<b/>y",
            "<f:b/>",
            "&amp;&#65;",
            "2006-05-23T23:22:30Z",
            "2006-05-23T23:22:30<!-- x -->Z",
        ]
    ),
    _XML_TEXT,
)
_QUALIFY = st.sampled_from(["", "", "", "", "", "m:", "o:", "f:", "xmlns=''"])
_ATTRS = st.sampled_from(
    ["", "", "", "", "", " xsi:nil='true'", " xsi:nil=' 1 '", " xsi:nil='false'", " nil='true'", " xsi:type='t'"]
)


_CANONICAL = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda moment: f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}Z"
)


@st.composite
def element_xml(draw: st.DrawFn, name: str, good: str) -> str:
    """``name`` holding ``good`` (a canonical time for times), or one time in six something odd."""
    wild = draw(st.integers(0, 5)) == 0
    qualify = draw(_QUALIFY) if wild and draw(st.booleans()) else ""
    attrs = draw(_ATTRS) if wild and draw(st.booleans()) else ""
    if name in ("EventTime", "Timestamp"):
        content = draw(st.one_of(xsd_datetimes(), _CONTENT) if wild else _CANONICAL)
    else:
        content = draw(_CONTENT) if wild else good
    if qualify == "xmlns=''":
        return f"<{name} xmlns=''{attrs}>{content}</{name}>"
    return f"<{qualify}{name}{attrs}>{content}</{qualify}{name}>"


def _shuffled(draw: st.DrawFn, children: list[str]) -> list[str]:
    extras = st.sampled_from(["<Unknown>u</Unknown>", "<!-- c -->", "<f:X/>", "<Event/>", "<m:HITId/>"])
    for extra in draw(st.lists(extras, max_size=2)) if draw(st.integers(0, 3)) == 0 else []:
        children.insert(draw(st.integers(0, len(children))), extra)
    if draw(st.integers(0, 4)) == 0:
        children = list(draw(st.permutations(children)))
    return children


_MULTIPLICITY = st.sampled_from([1] * 14 + [0, 2])


@st.composite
def event_xml(draw: st.DrawFn) -> str:
    children = []
    for name in EVENT_FIELDS:
        for _ in range(draw(_MULTIPLICITY)):
            children.append(draw(element_xml(name, GOOD_EVENT[name])))
    qualify = draw(st.sampled_from([""] * 10 + ["m:", "f:"]))
    return f"<{qualify}Event>{''.join(_shuffled(draw, children))}</{qualify}Event>"


@st.composite
def notify_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    version = draw(st.sampled_from(versions.VERSIONS))
    good = {"Signature": "c2ln", "Timestamp": "2006-05-23T23:22:30Z", "Version": version}
    children = []
    for name in ("Signature", "Timestamp", "Version"):
        for _ in range(draw(_MULTIPLICITY)):
            children.append(draw(element_xml(name, good[name])))
    children += draw(st.lists(event_xml(), min_size=draw(st.sampled_from([1] * 9 + [0])), max_size=4))
    soap_action = draw(st.sampled_from([None, '"http://soap.amazon.com"', versions.wsdl_url(version)]))
    body = envelope("".join(_shuffled(draw, children)), namespace=versions.namespace(version))
    return body, soap_action


@BUDGET
@given(notify_bodies())
def test_generated_messages(message: tuple[bytes, str | None]) -> None:
    body, soap_action = message
    assert check_body(body, soap_action) is not None


@BUDGET
@given(mutated(), st.sampled_from([None, '"http://soap.amazon.com"']))
def test_mutated_recordings(body: bytes, soap_action: str | None) -> None:
    check_body(body, soap_action)
