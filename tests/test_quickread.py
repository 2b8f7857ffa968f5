"""The quick reading of MTurk's layout (soapreceptor.quickread) must be the full reading, faster.

Every test compares ``wire.parse_notify`` (quick where the layout fits) with the full reading
through lxml (``parse_envelope``, ``split_envelope``, ``read_notify``): the same Notification,
field by field, types and time zones included, or the same fault. The full reading is itself held
to the reading before any fast path by tests/test_wire_fastpath.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import payloads
from soapreceptor import fixtures, quickread, versions, wire
from soapreceptor.wire import SOAP11_ENV, SOAP12_ENV, XSI
from tests.test_properties import mutated
from tests.test_wire_fastpath import outcome

T = TypeVar("T")
BUDGET = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
NS = versions.namespace("2006-05-05")
XSD = "http://www.w3.org/2001/XMLSchema"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XMLNS_NS = "http://www.w3.org/2000/xmlns/"
FIELDS = ("EventType", "EventTime", "HITTypeId", "HITId", "AssignmentId")
GOOD = ("AssignmentAccepted", "2006-05-23T23:00:00Z", "KDSFO4455LKDAF3", "KDSFO4455LKDAF3HIT", "KDSFO4455LKDAF3ASG")


def full_reading(body: bytes, soap_action: str | None) -> object:
    header, notify = wire.split_envelope(wire.parse_envelope(body))
    return wire.read_notify(notify, header=header, soap_action=soap_action)


def quick_reading(body: bytes, soap_action: str | None) -> object:
    """The quick reading alone: None where it leaves the message to the full one."""
    layout = quickread.match(body)
    return None if layout is None else wire._read_layout(layout, soap_action)


def same(body: bytes, soap_action: str | None = None) -> bool:
    """Assert both readings agree; whether the quick one read it."""
    expected = outcome(lambda: full_reading(body, soap_action))
    assert outcome(lambda: wire.parse_notify(body, soap_action)) == expected
    quick = quick_reading(body, soap_action)
    if quick is not None:
        assert expected == outcome(lambda: quick), "the quick reading accepted what the full one reads otherwise"
    return quick is not None


def document(
    *,
    events: list[tuple[str, ...]] | None = None,
    signature: str = "c2ln",
    timestamp: str = "2006-05-23T23:22:30Z",
    version: str = "2006-05-05",
    namespace: str = NS,
    header: str = "",
    declarations: str = f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsd="{XSD}" xmlns:xsi="{XSI}"',
    prefix: str = "soapenv",
    declaration: str = '<?xml version="1.0" encoding="UTF-8"?>\n',
    typed: str = ' xsi:type="xsd:dateTime"',
    gap: str = "\n  ",
    tail: str = "\n",
) -> bytes:
    """A message in MTurk's layout, each part replaceable."""
    parts = []
    for fields in [GOOD] if events is None else events:
        inner = gap.join(f"<{name}>{text}</{name}>" for name, text in zip(FIELDS, fields, strict=False))
        parts.append(f"<Event>{gap}{inner}{gap}</Event>")
    return (
        f"{declaration}<{prefix}:Envelope {declarations}>{gap}{header}<{prefix}:Body>{gap}"
        f'<Notify xmlns="{namespace}">{gap}<Signature>{signature}</Signature>{gap}'
        f"<Timestamp{typed}>{timestamp}</Timestamp>{gap}<Version>{version}</Version>{gap}"
        f"{gap.join(parts)}{gap}</Notify>{gap}</{prefix}:Body>{gap}</{prefix}:Envelope>{tail}"
    ).encode()


def wsdl_header(url: str, namespace: str = NS, prefix: str = "soapenv") -> str:
    return f'<{prefix}:Header><WSDL xmlns="{namespace}">{url}</WSDL></{prefix}:Header>'


# -- what MTurk sends is read quickly -------------------------------------------------------------


@pytest.mark.parametrize("fixture", fixtures.standard_set(), ids=lambda f: f.name.rpartition("fixtures/")[2])
def test_recorded_fixtures(fixture: fixtures.Fixture) -> None:
    soap_action = fixture.header("SOAPAction")
    quick = same(fixture.body, soap_action)
    # All are in MTurk's layout: each one the reading accepts is read quickly (whatever the
    # receptor then says of its signature or age). One it refuses is read fully, to say why.
    read = outcome(lambda: full_reading(fixture.body, soap_action))
    assert isinstance(read, tuple)
    assert quick == (read[0] == "ok")


@pytest.mark.parametrize("events", [1, 10, 100])
def test_the_benchmarks_messages_are_read_quickly(events: int) -> None:
    (body,) = payloads.messages(events, 1)
    assert same(body)


@pytest.mark.parametrize(
    "body",
    [
        document(),
        document(header=wsdl_header(versions.wsdl_url("2006-05-05"))),
        document(header=wsdl_header("not a WSDL URL")),
        document(events=[GOOD[:4]]),  # a HIT's event: no AssignmentId
        document(events=[("Ping", "", "", "", "")]),
        document(events=[GOOD] * 3),
        document(signature=""),
        document(signature="").replace(b"<Signature></Signature>", b""),
        document(typed=""),
        document(declaration=""),
        document(declaration="<?xml version='1.0'?>"),
        document(gap=""),
        document(gap="\r\n\t "),
        document(prefix="s", declarations=f"xmlns:s='{SOAP11_ENV}' xmlns:xsi='{XSI}'"),
        document(prefix="soap-env", declarations=f'xmlns:soap-env="{SOAP11_ENV}"', typed=""),
        document(version=" 2006-05-05\n"),
        document(events=[(" Assignment Accepted ", "2006-05-23T23:00:00.5+02:00", "\tA\nB", "x", "")]),
    ],
)
def test_the_layout_is_read_quickly(body: bytes) -> None:
    assert same(body)
    assert same(body, '"http://soap.amazon.com"')
    assert same(body, versions.wsdl_url("2006-05-05"))


# -- anything else is read fully, with the same result ---------------------------------------------

NEAR_MISSES = [
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}"'),  # xsi:type with xsi undeclared
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="{XSI}" xmlns:xsi="{XSI}"'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="{XSI}"'),
    document(declarations=f'xmlns:soapenv="{SOAP12_ENV}" xmlns:xsi="{XSI}"'),
    document(declarations=f'xmlns:soapenv="urn:other" xmlns:xsi="{XSI}"'),
    document(declarations=f'xmlns:other="{SOAP11_ENV}" xmlns:xsi="{XSI}"'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="{XSI}" xmlns:xml="urn:x"'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="{XSI}" xmlns:xmlns="urn:x"'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="{XSI}" xmlns:XmLfoo="urn:x"'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi=""'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}\' xmlns:xsi="{XSI}"'),
    document(prefix="xml", declarations=f'xmlns:xml="{SOAP11_ENV}" xmlns:xsi="{XSI}"'),
    document(namespace="http://requester.mturk.amazonaws.com/doc/2099-01-01"),
    document(namespace="urn:not-mturk"),
    document(version="2006-10-31"),
    document(version=""),
    document(timestamp=""),
    document(timestamp="yesterday"),
    document(timestamp="2006-05-23T23:22:30"),
    document(events=[("", *GOOD[1:])]),
    document(events=[(" ", *GOOD[1:])]),
    document(events=[(GOOD[0], "not a time", *GOOD[2:])]),
    document(events=[(GOOD[0], "", *GOOD[2:])]),
    document(events=[GOOD[:3]]),
    document(events=[]),
    document(header=wsdl_header(versions.wsdl_url("2006-10-31"))),
    document(header=wsdl_header(versions.wsdl_url("2099-01-01"))),
    # The header and <Version> agree with each other, not with Notify's namespace.
    document(version="2006-10-31", header=wsdl_header(versions.wsdl_url("2006-10-31"))),
    document(header=wsdl_header(versions.wsdl_url("2006-05-05"), prefix="other")),
    document(header="<soapenv:Header></soapenv:Header>"),
    document(header="<soapenv:Header/>"),
    document(signature="c2&#x6c;n"),
    document(signature="c2&amp;ln"),
    document(signature="c2]]>ln"),
    document(signature="c2\rln"),
    document(signature="c2\x0cln"),
    document(signature="c2\x00ln"),
    document(signature="c2\u00e9ln"),
    document(signature="<![CDATA[c2ln]]>"),
    document(signature="c2<!-- x -->ln"),
    document(typed=' xsi:nil="true"'),
    document(typed=" xsi:type='xsd:dateTime\""),
    document(typed=' xsi:type="xsd:string"'),
    document(gap="\x0c"),
    document(gap="\x0b"),
    document(declaration='<?xml version="1.1" encoding="UTF-8"?>'),
    document(declaration='<?xml version="1.0" encoding="ISO-8859-1"?>'),
    document(declaration=' <?xml version="1.0"?>'),
    document(declaration="\ufeff"),
    document(declaration="<!DOCTYPE x []>"),
    document(declaration="<?pi x?>"),
    document(tail="\n<!-- after -->"),
    document(tail="\n<?pi x?>"),
    document(tail="junk"),
    document(tail="\n<soapenv:Envelope/>"),
    # Namespace names libxml2 refuses: not a URI, or reserved.
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="urn:%zz"'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="relative"'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="{XMLNS_NS}"'),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:xsi="{XML_NS}"'),
    document(header=wsdl_header(versions.wsdl_url("2006-05-05"), namespace=XML_NS)),
    document(header=wsdl_header(versions.wsdl_url("2006-05-05"), namespace=XMLNS_NS)),
    document(header=wsdl_header(versions.wsdl_url("2006-05-05"), namespace="urn:a b")),
    # Past libxml2's limits (without huge_tree): a name of over 50,000 characters.
    document(prefix="p" * 50_001, declarations=f'xmlns:{"p" * 50_001}="{SOAP11_ENV}"', typed=""),
    document(prefix="p" * 64, declarations=f'xmlns:{"p" * 64}="{SOAP11_ENV}"', typed=""),
    # End tags that do not match their start tags (a second prefix for the same namespace).
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:s="{SOAP11_ENV}"', typed="").replace(
        b"</soapenv:Body>", b"</s:Body>"
    ),
    document(declarations=f'xmlns:soapenv="{SOAP11_ENV}" xmlns:s="{SOAP11_ENV}"', typed="").replace(
        b"</soapenv:Envelope>", b"</s:Envelope>"
    ),
]


@pytest.mark.parametrize("body", NEAR_MISSES)
def test_near_misses_are_read_as_the_full_reading_reads_them(body: bytes) -> None:
    for soap_action in (
        None,
        '"http://soap.amazon.com"',
        versions.wsdl_url("2006-05-05"),
        versions.wsdl_url("2099-01-01"),
    ):
        same(body, soap_action)


def test_near_misses_include_messages_the_quick_reading_leaves_alone_and_ones_it_reads() -> None:
    # The list is about the edge of the layout: most fall outside it, a few just inside it.
    quick = [body for body in NEAR_MISSES if quick_reading(body, None) is not None]
    assert 0 < len(quick) < len(NEAR_MISSES) // 2


# -- generated and mutated messages ----------------------------------------------------------------

_CHARS = st.sampled_from([*"aZ09 +/=:-.T\t\n\r\x0c\x00&<>]'\"\u00e9", "]]>", "&amp;", "<!---->"])
_TEXTS = st.one_of(st.sampled_from(["", *GOOD, "2006-05-23T23:22:30Z"]), st.lists(_CHARS, max_size=12).map("".join))
#: Namespace names, most of them URIs, some of them not, some reserved.
_NAMESPACES = st.one_of(
    st.sampled_from([XML_NS, XMLNS_NS, "urn:x", "http://example.org/a"]),
    st.tuples(
        st.sampled_from(["urn:", "http://", "x", "1a:", ""]),
        st.lists(st.sampled_from([*"aZ09/.:_~-%?#[]@!$&()*+,;= ", "%20", "%zz", "%"]), max_size=8).map("".join),
    ).map("".join),
)
_TIMES = st.one_of(
    st.sampled_from(["", "2006-05-23T23:22:30Z", "2006-05-23T23:22:30.25-05:00", "2006-05-23T24:00:00Z", "x"]),
    st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5))])).map(dt.datetime.isoformat),
)


def often(good: T, *others: T) -> st.SearchStrategy[T]:
    """``good`` most of the time, else one of ``others``: most generated messages are near the layout."""
    return st.sampled_from([good] * (2 * len(others) or 1) + list(others))


@st.composite
def layouts(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A message in MTurk's layout or near it, and a SOAPAction to send it with."""

    def text(good: str) -> str:
        return draw(st.one_of(often(good, "", " "), _TEXTS))

    version = draw(often("2006-05-05", *versions.VERSIONS[1:], "2099-01-01"))
    events: list[tuple[str, ...]] = []
    for _ in range(draw(often(1, 0, 2, 3))):
        fields: tuple[str, ...] = (text("AssignmentAccepted"), draw(st.one_of(often(GOOD[1], ""), _TIMES)))
        fields += tuple(text(good) for good in GOOD[2 : 2 + draw(often(3, 0, 1, 2))])  # the rest left out
        events.append(fields)
    prefix = draw(often("soapenv", "s", "SOAP-ENV", "xmlns", "xml"))
    quote = draw(st.sampled_from(['"', "'"]))
    xsi = draw(often(f" xmlns:xsi={quote}{XSI}{quote}", ""))
    extra = draw(often("", f" xmlns:x={quote}{draw(_NAMESPACES)}{quote}"))
    header_version = draw(often("", version, "2006-10-31", "2099-01-01"))
    body = document(
        events=events,
        signature=text("c2ln"),
        timestamp=draw(st.one_of(often("2006-05-23T23:22:30Z"), _TIMES)),
        version=draw(often(version, f" {version} ", "2006-05-05")),
        namespace=versions.namespace(version),
        header=wsdl_header(versions.wsdl_url(header_version), draw(often(NS, draw(_NAMESPACES))), prefix)
        if header_version
        else "",
        declarations=f"xmlns:{prefix}={quote}{draw(often(SOAP11_ENV, SOAP12_ENV))}{quote}{xsi}{extra}",
        prefix=prefix,
        typed=draw(often(' xsi:type="xsd:dateTime"', "")),
        gap=draw(often("\n  ", "", " \r\n", "\x0c")),
    )
    soap_action: str | None = draw(often(None, '"http://soap.amazon.com"', f'"{versions.wsdl_url(version)}"'))
    return body, soap_action


@BUDGET
@given(layouts())
def test_generated_messages_are_read_alike(message: tuple[bytes, str | None]) -> None:
    same(*message)


def test_the_generated_messages_reach_the_quick_reading() -> None:
    # The property above means little if the quick reading never accepts what it generates.
    read: list[bool] = []

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(layouts())
    def count(message: tuple[bytes, str | None]) -> None:
        read.append(quick_reading(*message) is not None)

    count()
    assert 10 < sum(read) < len(read)


@BUDGET
@given(mutated(), st.sampled_from([None, '"http://soap.amazon.com"', versions.wsdl_url("2006-05-05")]))
def test_mutated_recordings_are_read_alike(body: bytes, soap_action: str | None) -> None:
    same(body, soap_action)


# -- bodies built to make a regular expression work hard -------------------------------------------

HARD: list[Callable[[], bytes]] = [
    lambda: document(declarations=" " * 100_000 + f'xmlns:soapenv="{SOAP11_ENV}"', typed=""),
    lambda: document(declarations=f'xmlns:soapenv="{SOAP11_ENV}"' * 20_000, typed=""),
    lambda: document(events=[GOOD] * 5_000, tail="x"),
    lambda: document(events=[GOOD] * 5_000)[:-40],
    lambda: b"<soapenv:Envelope" + b" xmlns:a='b'" * 50_000,
    lambda: document(signature="a" * 500_000, tail="<"),
    lambda: document(signature="a" * 10_000_001),  # past libxml2's limit on a text, without huge_tree
]


@pytest.mark.parametrize("make", HARD)
def test_bodies_built_to_make_the_expression_backtrack_are_read_alike(make: Callable[[], bytes]) -> None:
    # Each repetition in the layout is followed by something it cannot match, so a
    # failing match gives back nothing it has to try again: these finish at once.
    same(make())
