"""What can go wrong, as types whose messages say what to do about it.

The hierarchy::

    SoapreceptorError
    ├── ConfigError                  bad settings: the server refuses to start
    ├── SendError                    the sender could not deliver a message
    └── NotifyFault                  answered to the caller as a SOAP 1.1 Fault
        ├── ClientFault              "Client..." faultcodes: the message is at fault
        │   ├── MalformedMessage     Client.MalformedMessage
        │   ├── UnknownOperation     Client.UnknownOperation
        │   ├── UnknownVersion       Client.UnknownVersion
        │   ├── VersionMismatch      Client.VersionMismatch (notification versions disagree)
        │   ├── UnsignedMessage      Client.UnsignedMessage
        │   ├── SignatureMismatch    Client.SignatureMismatch
        │   └── StaleTimestamp       Client.StaleTimestamp
        ├── EnvelopeVersionMismatch  VersionMismatch (SOAP 1.1: not a SOAP 1.1 envelope)
        ├── MustUnderstand           MustUnderstand (SOAP 1.1: a header we cannot honour)
        └── ServerFault              "Server..." faultcodes: the receptor is at fault
            └── JournalUnavailable   Server.JournalUnavailable: the message could not be stored

A fault's ``faultstring`` is shown to whoever sent the message, so it never
contains a secret, a traceback or an internal path.
"""

from __future__ import annotations

from typing import ClassVar


class SoapreceptorError(Exception):
    """Base of every error soapreceptor raises on purpose."""


class ConfigError(SoapreceptorError):
    """The settings are unusable; the message names the setting and the fix."""


class SendError(SoapreceptorError):
    """The sender could not get an answer from the receptor (network, HTTP, or a non-SOAP reply)."""


class NotifyFault(SoapreceptorError):
    """A refusal that is answered with a SOAP 1.1 Fault.

    ``faultcode`` is the local part of the fault code QName (the SOAP envelope
    namespace is implied), ``faultstring`` the human-readable reason.
    """

    faultcode: ClassVar[str] = "Server"

    def __init__(self, faultstring: str) -> None:
        super().__init__(faultstring)
        self.faultstring = faultstring

    def __str__(self) -> str:
        return f"{self.faultcode}: {self.faultstring}"


class ClientFault(NotifyFault):
    """The message is at fault; sending it again unchanged will fail again."""

    faultcode = "Client"


class MalformedMessage(ClientFault):
    """Not a well-formed Notify call: bad XML, a missing or duplicated element, a bad value."""

    faultcode = "Client.MalformedMessage"


class UnknownOperation(ClientFault):
    """The SOAP Body holds something other than a Notify call."""

    faultcode = "Client.UnknownOperation"


class UnknownVersion(ClientFault):
    """The message names a notification API version this receptor does not accept."""

    faultcode = "Client.UnknownVersion"


class VersionMismatch(ClientFault):
    """The versions named by the header, the ``Notify`` namespace and ``<Version>`` disagree."""

    faultcode = "Client.VersionMismatch"


class UnsignedMessage(ClientFault):
    """The Signature is missing, empty or ``DEPRECATED`` and unsigned messages are not accepted."""

    faultcode = "Client.UnsignedMessage"


class SignatureMismatch(ClientFault):
    """The Signature matches none of the configured secrets."""

    faultcode = "Client.SignatureMismatch"


class StaleTimestamp(ClientFault):
    """The Timestamp is outside the freshness window (too old, or too far in the future)."""

    faultcode = "Client.StaleTimestamp"


class EnvelopeVersionMismatch(NotifyFault):
    """SOAP 1.1's own ``VersionMismatch``: the envelope is not in the SOAP 1.1 namespace."""

    faultcode = "VersionMismatch"


class MustUnderstand(NotifyFault):
    """SOAP 1.1's ``MustUnderstand``: a header block marked mustUnderstand that we do not know."""

    faultcode = "MustUnderstand"


class ServerFault(NotifyFault):
    """The receptor failed; the message may succeed later. Never carries internal details."""

    faultcode = "Server"


class JournalUnavailable(ServerFault):
    """The journal could not store the message, so it was not accepted."""

    faultcode = "Server.JournalUnavailable"
