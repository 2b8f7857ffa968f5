"""MTurk's notification signature: HMAC-SHA1 over service, operation and Timestamp.

    Signature = base64(HMAC-SHA1(secret, "AWSMechanicalTurkRequesterNotification" + "Notify" + Timestamp))

The signature covers the Timestamp text exactly as sent, and nothing else: not
the events. Verification is constant-time and tries every key of a
:class:`Keyring`, because MTurk keeps signing a HIT type's notifications with
the key that was current when the notification was set up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Final

from .versions import OPERATION, SERVICE_NAME

_PREFIX: Final[bytes] = (SERVICE_NAME + OPERATION).encode("ascii")

#: What MTurk put in ``Signature`` once a requester's key was deleted (from about 2012).
DEPRECATED: Final[str] = "DEPRECATED"


def sign(secret: str | bytes, timestamp: str) -> str:
    """The signature MTurk would send with ``timestamp`` under ``secret``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, _PREFIX + timestamp.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def is_unsigned(signature: str | None) -> bool:
    """True for a Signature that is missing, empty or the literal ``DEPRECATED``."""
    return signature is None or not signature.strip() or signature.strip() == DEPRECATED


class Keyring:
    """The secrets a receptor accepts signatures from; the repr never shows them."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: Iterable[str | bytes] = ()) -> None:
        keys = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in secrets]
        if any(not key for key in keys):
            raise ValueError("a secret may not be empty")
        self._keys: tuple[bytes, ...] = tuple(dict.fromkeys(keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"<Keyring with {len(self._keys)} secret(s)>"

    def verify(self, timestamp: str, signature: str) -> bool:
        """True if ``signature`` is some key's signature of ``timestamp``.

        Every key is tried even after a match, and each comparison is
        ``hmac.compare_digest``, so the time taken says nothing about which
        key matched or how much of the signature was right.
        """
        given = signature.strip().encode("ascii", "replace")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(sign(key, timestamp).encode("ascii"), given)
        return matched
