"""Reading Notify calls from bytes and writing answers (the sans-IO wire layer)."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree

from soapreceptor import errors, versions, wire
from soapreceptor.model import Event
from tests.support import ACCEPTED_EVENT, VECTOR_TIMESTAMP, amazon_envelope, wsdl_url

NS = "http://requester.mturk.amazonaws.com/doc/"


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_amazon_shape_for_every_version(version: str) -> None:
    notification = wire.parse_notify(amazon_envelope(version), '"http://soap.amazon.com"')
    assert notification.version == version
    assert notification.version_source == "namespace"
    assert notification.timestamp == VECTOR_TIMESTAMP
    assert notification.timestamp_value == dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=dt.UTC)
    assert notification.signature == "SCKBAzx2/Kt3aYqRcDjBAqOSm+o="
    assert notification.events == (
        Event(
            event_type="AssignmentAccepted",
            event_time=dt.datetime(2006, 4, 21, 18, 55, 23, tzinfo=dt.UTC),
            hit_type_id="KDSFO4455LKDAF3",
            hit_id="KDSFO4455LKDAF3",
            assignment_id="KDSFO4455LKDAF3KDSFO4455LKDAF3",
            version=version,
        ),
    )


@pytest.mark.parametrize(
    "soap_action", [None, "", '""', "http://soap.amazon.com", '"http://soap.amazon.com"', "Notify"]
)
def test_soap_action_that_names_no_version_is_ignored(soap_action: str | None) -> None:
    assert wire.parse_notify(amazon_envelope("2006-10-31"), soap_action).version == "2006-10-31"


@pytest.mark.parametrize("quote", ["", '"'])
def test_version_from_wsdl_url_in_soap_action(quote: str) -> None:
    url = quote + wsdl_url("2006-08-23") + quote
    notification = wire.parse_notify(amazon_envelope("2006-08-23"), url)
    assert notification.version == "2006-08-23"
    assert notification.version_source == "WSDL URL in SOAPAction"


def test_version_from_wsdl_url_in_soap_header() -> None:
    header = f'<aws:WSDL xmlns:aws="urn:example">{wsdl_url("2006-10-31")}</aws:WSDL>'
    notification = wire.parse_notify(amazon_envelope("2006-10-31", header=header))
    assert notification.version == "2006-10-31"
    assert notification.version_source.startswith("WSDL URL in SOAP header")


def test_header_and_namespace_disagree() -> None:
    with pytest.raises(errors.VersionMismatch) as caught:
        wire.parse_notify(amazon_envelope("2006-05-05"), wsdl_url("2006-10-31"))
    assert "2006-10-31" in caught.value.faultstring
    assert "2006-05-05" in caught.value.faultstring


def test_soap_action_and_soap_header_disagree() -> None:
    header = f"<WSDL>{wsdl_url('2006-05-05')}</WSDL>"
    with pytest.raises(errors.VersionMismatch, match=r"2006-10-31.*2006-05-05|2006-05-05.*2006-10-31"):
        wire.parse_notify(amazon_envelope("2006-05-05", header=header), wsdl_url("2006-10-31"))


def test_version_element_disagrees_with_namespace() -> None:
    with pytest.raises(errors.VersionMismatch) as caught:
        wire.parse_notify(amazon_envelope("2006-05-05", declared_version="2006-10-31"))
    assert "'2006-10-31'" in caught.value.faultstring
    assert "2006-05-05" in caught.value.faultstring
    assert caught.value.faultcode == "Client.VersionMismatch"


def test_unknown_version_in_namespace_and_in_header() -> None:
    with pytest.raises(errors.UnknownVersion, match="2007-01-01"):
        wire.parse_notify(amazon_envelope("2007-01-01"))
    with pytest.raises(errors.UnknownVersion, match="2007-01-01"):
        wire.parse_notify(amazon_envelope("2006-05-05"), wsdl_url("2007-01-01"))
    with pytest.raises(errors.UnknownVersion, match="urn:other"):
        wire.parse_notify(amazon_envelope().replace(NS.encode() + b"2006-05-05", b"urn:other"))


def test_event_types_known_and_unknown_and_sparse_events() -> None:
    events = [
        {"EventType": "Ping"},
        {"EventType": "HITReviewable", "EventTime": "2006-04-21T18:55:23Z", "HITTypeId": "T", "HITId": "H"},
        {"EventType": "HITExpired", "EventTime": "2006-04-21T18:55:23Z", "HITTypeId": "T", "HITId": "H"},
        {"EventType": "SomethingNew2031", "HITId": "H", "AssignmentId": "A"},
        {"EventType": "AssignmentAutoApproved", "HITTypeId": "T", "HITId": "H", "AssignmentId": "A"},
    ]
    parsed = wire.parse_notify(amazon_envelope(events=events)).events
    assert [e.event_type for e in parsed] == [e["EventType"] for e in events]
    ping = parsed[0]
    assert (ping.event_time, ping.hit_type_id, ping.hit_id, ping.assignment_id) == (None, None, None, None)
    assert parsed[1].assignment_id is None
    assert parsed[3].hit_type_id is None


def test_batch_of_many_events_keeps_order() -> None:
    events = [{**ACCEPTED_EVENT, "AssignmentId": f"A{i:03d}"} for i in range(100)]
    parsed = wire.parse_notify(amazon_envelope(events=events)).events
    assert [e.assignment_id for e in parsed] == [f"A{i:03d}" for i in range(100)]


def test_ids_are_opaque() -> None:
    odd = {"EventType": "AssignmentSubmitted", "HITId": "é-😀-" + "x" * 500, "AssignmentId": " spaced "}
    event = wire.parse_notify(amazon_envelope(events=[odd])).events[0]
    assert event.hit_id == odd["HITId"]
    assert event.assignment_id == " spaced "


def test_prefixed_and_unqualified_children_and_unknown_children() -> None:
    body = f"""<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<m:Notify xmlns:m="{NS}2006-05-05"><!-- a comment -->
  <m:Timestamp>2006-05-23T23:22:30Z</m:Timestamp>
  <Signature>abc=</Signature>
  <m:Version>2006-05-05</m:Version>
  <m:FutureElement>ignored</m:FutureElement>
  <x:Other xmlns:x="urn:x">ignored too</x:Other>
  <m:Event><m:EventType>Ping</m:EventType><m:Extra/></m:Event>
</m:Notify></s:Body></s:Envelope>""".encode()
    notification = wire.parse_notify(body)
    assert notification.signature == "abc="
    assert [e.event_type for e in notification.events] == ["Ping"]


def test_text_with_cdata_and_comments_and_nil() -> None:
    body = amazon_envelope(
        signature="<![CDATA[abc=]]>",
        events=[{"EventType": "Ping", "HITId": "H<!-- c -->1", "AssignmentId": ""}],
    ).replace(b"<AssignmentId></AssignmentId>", b'<AssignmentId xsi:nil="true"/>')
    notification = wire.parse_notify(body)
    assert notification.signature == "abc="
    assert notification.events[0].hit_id == "H1"
    assert notification.events[0].assignment_id is None


@pytest.mark.parametrize(
    "body",
    [
        amazon_envelope(timestamp="2006-05-23T23:22:30<!-- c -->Z"),
        amazon_envelope(signature="SCKBAzx2/Kt3aYqRc<!-- c -->DjBAqOSm+o="),
        amazon_envelope(signature="<x/>"),
    ],
)
def test_signed_fields_hold_only_text(body: bytes) -> None:
    with pytest.raises(errors.MalformedMessage, match="only text"):
        wire.parse_notify(body)


@pytest.mark.parametrize(
    "body",
    [
        amazon_envelope().replace(b"<Version>", b"<?evil run?><Version>"),
        amazon_envelope().replace(b"<soapenv:Envelope", b"<?xml-stylesheet href='x'?><soapenv:Envelope", 1),
    ],
)
def test_processing_instructions_are_refused(body: bytes) -> None:
    with pytest.raises(errors.MalformedMessage, match="processing instructions"):
        wire.parse_notify(body)


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_or_empty_signature_reads_as_none(signature: str | None) -> None:
    assert wire.parse_notify(amazon_envelope(signature=signature)).signature is None


def test_deprecated_signature_is_kept_for_the_policy() -> None:
    assert wire.parse_notify(amazon_envelope(signature="DEPRECATED")).signature == "DEPRECATED"


@pytest.mark.parametrize(
    ("body", "fault", "fragment"),
    [
        (b"", errors.MalformedMessage, "empty"),
        (b"<not xml", errors.MalformedMessage, "not well-formed"),
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]><x>&e;</x>", errors.MalformedMessage, "DOCTYPE"),
        (b"<Envelope/>", errors.MalformedMessage, "not a SOAP 1.1 Envelope"),
        (
            b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
            errors.EnvelopeVersionMismatch,
            "SOAP 1.1",
        ),
        (b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"/>', errors.MalformedMessage, "no Body"),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
            errors.MalformedMessage,
            "Body is empty",
        ),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><Hello/></e:Body></e:Envelope>',
            errors.UnknownOperation,
            "Hello",
        ),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/><e:Body/></e:Envelope>',
            errors.MalformedMessage,
            "unexpected",
        ),
    ],
)
def test_not_a_notify_call(body: bytes, fault: type[errors.NotifyFault], fragment: str) -> None:
    with pytest.raises(fault, match=fragment):
        wire.parse_notify(body)


def test_undeclared_prefixes_are_refused() -> None:
    # Found by the fuzzer: libxml2 recovers from an undeclared prefix and
    # leaves the tag as "soapenv:Envelope", which is no SOAP envelope at all.
    body = amazon_envelope().replace(b"xmlns:soapenv=", b"xmlns:koapenv=")
    with pytest.raises(errors.MalformedMessage, match="Namespace prefix soapenv on Envelope is not defined"):
        wire.parse_notify(body)


def test_two_notify_elements() -> None:
    one = amazon_envelope()
    start, end = one.index(b"<Notify"), one.index(b"</Notify>") + len(b"</Notify>")
    doubled = one[:end] + one[start:end] + one[end:]
    with pytest.raises(errors.MalformedMessage, match="2 elements"):
        wire.parse_notify(doubled)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b.replace(b"<Version>2006-05-05</Version>", b""), "no Version"),
        (
            lambda b: b.replace(b'<Timestamp xsi:type="xsd:dateTime">2006-05-23T23:22:30Z</Timestamp>', b""),
            "no Timestamp",
        ),
        (lambda b: b.replace(b"<Signature>", b"<Signature>x</Signature><Signature>"), "more than one Signature"),
        (lambda b: b.replace(b"2006-05-23T23:22:30Z", b"last tuesday"), "Timestamp"),
        (lambda b: b.replace(b"2006-04-21T18:55:23Z", b"2006-04-31T18:55:23Z"), "Event 1 EventTime"),
        (lambda b: b.replace(b"<EventType>AssignmentAccepted</EventType>", b""), "Event 1 has no EventType"),
        (lambda b: b.replace(b"<HITId>", b"<HITId>x</HITId><HITId>"), "more than one HITId"),
        (lambda b: b.replace(b"<Version>2006-05-05</Version>", b"<Version><b>2006-05-05</b></Version>"), "text"),
    ],
)
def test_malformed_notify(mutate: object, fragment: str) -> None:
    body = mutate(amazon_envelope())  # type: ignore[operator]
    with pytest.raises(errors.MalformedMessage, match=fragment):
        wire.parse_notify(body)


def test_no_event() -> None:
    with pytest.raises(errors.MalformedMessage, match="no Event"):
        wire.parse_notify(amazon_envelope(events=[]))


def test_must_understand_header_we_do_not_know() -> None:
    header = '<x:Security xmlns:x="urn:x" soapenv:mustUnderstand="1">t</x:Security>'
    with pytest.raises(errors.MustUnderstand, match="Security"):
        wire.parse_notify(amazon_envelope(header=header))
    # Without mustUnderstand an unknown header block is ignored, as SOAP 1.1 says.
    assert wire.parse_notify(amazon_envelope(header='<x:Trace xmlns:x="urn:x">t</x:Trace>')).version == "2006-05-05"


def test_entities_are_never_resolved() -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + amazon_envelope().split(
        b"?>", 1
    )[1].replace(b"KDSFO4455LKDAF3KDSFO4455LKDAF3", b"&x;")
    with pytest.raises(errors.MalformedMessage, match="DOCTYPE"):
        wire.parse_notify(body)


@pytest.mark.parametrize("version", versions.VERSIONS)
def test_response_is_empty_notify_response_in_request_namespace(version: str) -> None:
    root = etree.fromstring(wire.render_response(version))
    body = root[0]
    assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    assert [child.tag for child in body] == [f"{{{NS}{version}}}NotifyResponse"]
    assert len(body[0]) == 0
    assert wire.read_answer(200, wire.render_response(version)) == (None, None)


def test_fault_rendering_round_trips_and_survives_hostile_text() -> None:
    fault = errors.SignatureMismatch("bad <signature> & \x00\x1f control \ud800 chars")
    body = wire.render_fault(fault)
    root = etree.fromstring(body)
    assert root.findtext(".//faultcode") == "soapenv:Client.SignatureMismatch"
    code, text = wire.read_answer(500, body)
    assert code == "Client.SignatureMismatch"
    assert text == "bad <signature> &  control  chars"


def test_read_answer_refuses_non_soap() -> None:
    with pytest.raises(ValueError, match="HTTP 502"):
        wire.read_answer(502, b"<html>Bad gateway</html>")
    with pytest.raises(ValueError, match="not a SOAP answer"):
        wire.read_answer(200, b"ok")
