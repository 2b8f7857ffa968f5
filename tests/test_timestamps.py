"""xsd:dateTime reading and MTurk-style formatting."""

from __future__ import annotations

import datetime as dt

import pytest

from soapreceptor.timestamps import format_timestamp, parse_xsd_datetime

UTC = dt.UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2006-05-23T23:22:30Z", dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=UTC)),
        ("2006-05-23T23:22:30.000Z", dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=UTC)),
        ("2006-05-23T23:22:30.1234567Z", dt.datetime(2006, 5, 23, 23, 22, 30, 123456, tzinfo=UTC)),
        ("2006-05-23T23:22:30", dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=UTC)),
        ("2006-05-23T23:22:30+02:00", dt.datetime(2006, 5, 23, 21, 22, 30, tzinfo=UTC)),
        ("2006-05-23T23:22:30-05:30", dt.datetime(2006, 5, 24, 4, 52, 30, tzinfo=UTC)),
        ("  2006-05-23T23:22:30Z\n", dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=UTC)),
        ("2006-05-23T24:00:00Z", dt.datetime(2006, 5, 24, 0, 0, 0, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", dt.datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse(text: str, expected: dt.datetime) -> None:
    parsed = parse_xsd_datetime(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2006-05-23",
        "2006-05-23 23:22:30Z",
        "20060523T232230Z",
        "2006-13-01T00:00:00Z",
        "2006-02-30T00:00:00Z",
        "2006-05-23T25:00:00Z",
        "2006-05-23T24:00:01Z",
        "2006-05-23T23:22:30+15:00",
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "-0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "2006-05-23T23:22:30\u0660Z",
    ],
)
def test_refuse(text: str) -> None:
    with pytest.raises(ValueError, match=r"xsd:dateTime|outside|not a valid"):
        parse_xsd_datetime(text)


def test_error_message_does_not_echo_huge_values() -> None:
    with pytest.raises(ValueError, match="not an xsd:dateTime") as caught:
        parse_xsd_datetime("x" * 100_000)
    assert len(str(caught.value)) < 200


def test_format_like_mturk() -> None:
    moment = dt.datetime(2006, 5, 23, 23, 22, 30, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_timestamp(moment) == "2006-05-23T21:22:30Z"
    with pytest.raises(ValueError, match="aware"):
        format_timestamp(dt.datetime(2006, 5, 23))
