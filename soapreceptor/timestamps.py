"""xsd:dateTime, read strictly and written the way MTurk wrote it.

MTurk signs the ``Timestamp`` text, so the receptor never re-serialises a
parsed value; this module only turns text into an instant (for the freshness
check and for ``Event.event_time``) and formats fresh timestamps for the sender.
Python's ``datetime.fromisoformat`` is not the parser: it accepts forms XML
Schema does not (a space for ``T``, basic format) and rejects some it does
(``24:00:00``, more than six fractional digits). It only reads MTurk's canonical
form (``2006-05-23T23:22:30Z``) once a stricter pattern has checked the shape,
because that is most of the work and it is several times quicker.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

_XSD_DATETIME: Final[re.Pattern[str]] = re.compile(
    r"(?P<year>-?\d{4,})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?",
    re.ASCII,
)

# MTurk's own form (what every recorded message carries), read without the general
# parser: four-digit year, hours 00-23, ``Z``, no fraction, no surrounding white space.
# Anything else, and any value this shape lets through that is not a real date and
# time (month 13, second 60, year 0000), takes the general path below, which says why.
_CANONICAL: Final[re.Pattern[str]] = re.compile(r"\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):\d{2}:\d{2}Z", re.ASCII)


def parse_xsd_datetime(text: str) -> dt.datetime:
    """Parse an xsd:dateTime into an aware UTC datetime.

    Surrounding white space is ignored (the type's whitespace facet is
    ``collapse``). A value without a zone is taken as UTC, which is what MTurk
    always sent. Raises ValueError with a readable reason for anything that is
    not an xsd:dateTime or that Python cannot represent (years outside 1-9999).
    """
    if _CANONICAL.fullmatch(text) is not None:
        try:
            # For exactly this shape fromisoformat reads what the general path
            # reads, and gives the same value: tzinfo is datetime.UTC.
            return dt.datetime.fromisoformat(text)
        except ValueError:
            pass  # not a real date or time: the general path words the refusal
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


def format_timestamp(moment: dt.datetime) -> str:
    """Format ``moment`` as MTurk did: UTC, whole seconds, ``Z`` (``2006-05-23T23:22:30Z``)."""
    if moment.tzinfo is None:
        raise ValueError("format_timestamp needs an aware datetime")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _zone(text: str | None) -> dt.timezone:
    if text is None or text == "Z":
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59 or (hours == 14 and minutes):
        raise ValueError(f"time zone offset {text} is outside -14:00..+14:00")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _preview(value: str, limit: int = 64) -> str:
    """Quote a value for an error message without echoing megabytes of it."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
