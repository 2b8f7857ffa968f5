"""The notification API versions soapreceptor understands, and how each is named on the wire.

MTurk versions its notification API separately from the requester API. A
version shows up on the wire in three places: the namespace of ``Notify``, the
``<Version>`` element, and (Amazon's words) "the message header as part of the
WSDL URL". This module is the single table of those names; nothing else in the
package spells a namespace or a WSDL URL by hand.
"""

from __future__ import annotations

import re
from typing import Final

#: Every notification version soapreceptor accepts, oldest first.
VERSIONS: Final[tuple[str, ...]] = ("2006-05-05", "2006-08-23", "2006-10-31")

#: The version every public SDK used from 2007 on; ``?wsdl`` serves it.
DEFAULT_VERSION: Final[str] = "2006-05-05"

SERVICE_NAME: Final[str] = "AWSMechanicalTurkRequesterNotification"
OPERATION: Final[str] = "Notify"

#: The soapAction of every operation in Amazon's requester WSDLs.
SOAP_ACTION: Final[str] = "http://soap.amazon.com"

_NAMESPACE_PREFIX: Final[str] = "http://requester.mturk.amazonaws.com/doc/"
_WSDL_URL_TEMPLATE: Final[str] = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurk/{version}/AWSMechanicalTurkRequesterNotification.wsdl"
)
# Any scheme and host: what identifies a notification WSDL is its path. The
# version group is deliberately loose (any date) so that an unknown version is
# reported as such instead of being mistaken for "no version given".
_WSDL_URL_RE: Final[re.Pattern[str]] = re.compile(
    r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s]+/AWSMechanicalTurk/"
    r"(?P<version>\d{4}-\d{2}-\d{2})/AWSMechanicalTurkRequesterNotification\.wsdl\s*$"
)
_NAMESPACE_RE: Final[re.Pattern[str]] = re.compile(
    r"^http://requester\.mturk\.amazonaws\.com/doc/(?P<version>\d{4}-\d{2}-\d{2})$"
)


def namespace(version: str) -> str:
    """The XML namespace of ``Notify`` for ``version``."""
    return _NAMESPACE_PREFIX + version


def wsdl_url(version: str) -> str:
    """Amazon's WSDL URL for ``version``, as MTurk puts it in the message header."""
    return _WSDL_URL_TEMPLATE.format(version=version)


def version_from_wsdl_url(text: str) -> str | None:
    """The version named by a notification WSDL URL, or None if ``text`` is not one.

    The version returned may be one this receptor does not know: callers check
    it against :data:`VERSIONS` so that they can say so precisely.
    """
    match = _WSDL_URL_RE.match(text)
    return match.group("version") if match else None


def version_from_namespace(ns: str | None) -> str | None:
    """The version named by a ``Notify`` namespace, or None if it is not an MTurk one."""
    if ns is None:
        return None
    match = _NAMESPACE_RE.match(ns)
    return match.group("version") if match else None


def is_known(version: str) -> bool:
    """True if soapreceptor accepts notifications of ``version``."""
    return version in VERSIONS
