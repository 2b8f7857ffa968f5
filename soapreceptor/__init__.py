"""soapreceptor: the receiving end of Mechanical Turk's SOAP notification API."""

from .errors import (
    ConfigError,
    NotifyFault,
    SendError,
    SoapreceptorError,
)
from .model import Event, EventType, Notification
from .settings import Settings
from .signature import Keyring, sign

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Event",
    "EventType",
    "Keyring",
    "Notification",
    "NotifyFault",
    "SendError",
    "Settings",
    "SoapreceptorError",
    "__version__",
    "sign",
]
