"""Whether to accept a parsed notification: signature, unsigned messages, freshness.

Pure: the current time is an argument, so every rule is testable without a
clock. The order of the checks is part of the contract: a message that is
both badly signed and stale is reported as badly signed, because that is the
failure an operator must act on first (a wrong key, or a forger).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from . import errors
from .model import Notification
from .signature import DEPRECATED, Keyring, is_unsigned


@dataclass(frozen=True)
class Policy:
    """The acceptance rules for notifications.

    ``tolerance`` is the freshness window in seconds either way around the
    receptor's clock; 0 turns the check off. ``accept_unsigned`` lets through
    messages whose Signature is missing, empty or ``DEPRECATED`` (what MTurk
    sent once a requester's key was deleted); a present but wrong signature
    is refused regardless.
    """

    keyring: Keyring = field(default_factory=Keyring)
    tolerance: float = 300.0
    accept_unsigned: bool = False

    def check(self, notification: Notification, now: dt.datetime) -> None:
        """Raise the :class:`~soapreceptor.errors.ClientFault` that refuses ``notification``, if any."""
        signature = notification.signature
        if is_unsigned(signature):
            if not self.accept_unsigned:
                what = "DEPRECATED" if signature and signature.strip() == DEPRECATED else "missing or empty"
                raise errors.UnsignedMessage(
                    f"the Signature is {what} and this receptor refuses unsigned notifications "
                    "(set SOAPRECEPTOR_ACCEPT_UNSIGNED=1 to accept them)"
                )
        elif not self.keyring:
            raise errors.SignatureMismatch(
                "the message is signed but this receptor has no secret to check it against "
                "(set SOAPRECEPTOR_SECRET or SOAPRECEPTOR_SECRET_FILE)"
            )
        elif signature is None or not self.keyring.verify(notification.timestamp, signature):
            raise errors.SignatureMismatch(
                f"the Signature does not match Timestamp {notification.timestamp!r} under any of the "
                f"{len(self.keyring)} configured secret(s); check that the receptor has the AWS secret "
                "key the notification was set up with"
            )
        if self.tolerance > 0:
            skew = (notification.timestamp_value - now).total_seconds()
            if abs(skew) > self.tolerance:
                direction = "old" if skew < 0 else "far in the future"
                raise errors.StaleTimestamp(
                    f"Timestamp {notification.timestamp!r} is {abs(skew):.0f} s {direction} for this "
                    f"receptor's clock ({now:%Y-%m-%dT%H:%M:%SZ}); the window is {self.tolerance:g} s "
                    "either way (SOAPRECEPTOR_TIMESTAMP_TOLERANCE)"
                )
