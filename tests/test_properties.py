"""Property-based tests (hypothesis): whatever the bytes, the parser and the app answer with a SOAP
refusal or acceptance, never an unhandled error. The budget is bounded so ``make test`` stays quick;
``make fuzz`` runs a long coverage-guided session."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from soapreceptor import Keyring, Settings, errors, fixtures, wire
from soapreceptor.wsgi import ReceptorApp, create_app
from tests.support import KEY_1, KEY_2, Harness

BUDGET = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
SEEDS = [f.body for f in fixtures.standard_set()]
SIGNED_AT = dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=dt.UTC)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A recorded body with a few byte-level edits: flips, insertions, deletions, splices."""
    body = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(0, len(body) - 1)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "splice"]))
        if edit == "flip" and body:
            body[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            body[at:at] = (
                draw(st.binary(min_size=1, max_size=16))
                if draw(st.booleans())
                else draw(
                    st.sampled_from(
                        [b"<", b">", b"&", b"<!--", b"]]>", b"<![CDATA[", b"&#0;", b"\x00", b"<Event>", b"</Notify>"]
                    )
                )
            )
        elif edit == "delete":
            del body[at : at + draw(st.integers(1, 64))]
        else:
            other = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(0, len(other)))
            body[at:at] = other[start : start + draw(st.integers(1, 200))]
    return bytes(body)


def read_or_refuse(body: bytes, soap_action: str | None) -> None:
    refusal: errors.NotifyFault | None = None
    try:
        notification = wire.parse_notify(body, soap_action)
    except errors.NotifyFault as fault:
        refusal = fault
    else:
        assert notification.events
        return
    # Anything but a NotifyFault escapes and fails the test: that is the property.
    assert refusal.faultcode
    assert refusal.faultstring


@BUDGET
@given(st.binary(max_size=2048), st.one_of(st.none(), st.text(max_size=200)))
def test_parser_on_arbitrary_bytes(body: bytes, soap_action: str | None) -> None:
    read_or_refuse(body, soap_action)


@BUDGET
@given(mutated(), st.sampled_from([None, '"http://soap.amazon.com"', "", "x"]))
def test_parser_on_mutated_recordings(body: bytes, soap_action: str | None) -> None:
    read_or_refuse(body, soap_action)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> ReceptorApp:
    journal = tmp_path_factory.mktemp("properties") / "journal.db"
    return create_app(Settings(keyring=Keyring([KEY_1, KEY_2]), journal=str(journal)), clock=lambda: SIGNED_AT)


@BUDGET
@given(
    body=mutated(), content_type=st.sampled_from(["text/xml; charset=utf-8", "application/soap+xml", "text/plain", ""])
)
def test_the_whole_app_on_mutated_recordings(app: ReceptorApp, body: bytes, content_type: str) -> None:
    reply = Harness(app).request(body=body, content_type=content_type)
    assert reply.code in (200, 400, 413, 415, 500)
    assert reply.headers["Content-Type"] == "text/xml; charset=utf-8"
    answer = etree.fromstring(reply.body)
    entry = answer[0][0]
    if reply.code == 200:
        assert etree.QName(entry).localname == "NotifyResponse"
    else:
        assert etree.QName(entry).localname == "Fault"
        assert "Traceback" not in reply.faultstring
        assert KEY_2 not in reply.faultstring


@given(
    st.text(),
    st.none() | st.text(),
    st.none() | st.text(),
    st.datetimes(timezones=st.just(dt.UTC)),
)
def test_the_dispatchers_dedup_key_is_json_dumps_of_the_fields_as_every_journal_stored_it(
    event_type: str, hit_id: str | None, assignment_id: str | None, event_time: dt.datetime
) -> None:
    # Keys already stored must keep matching: the quick form must be byte for byte the old one.
    from soapreceptor.journal import _key, dedup_key  # noqa: PLC0415 (the journal's own helper)
    from soapreceptor.model import Event  # noqa: PLC0415

    expected = json.dumps([event_type, hit_id, assignment_id, event_time.isoformat()])
    assert _key(event_type, hit_id, assignment_id, event_time.isoformat()) == expected
    assert dedup_key(Event(event_type, event_time, None, hit_id, assignment_id, "2006-05-05")) == expected
