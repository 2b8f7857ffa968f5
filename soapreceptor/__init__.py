"""soapreceptor: the receiving end of Mechanical Turk's SOAP notification API."""

# First, before anything imports spyne: see spyne_compat for why.
from . import spyne_compat

spyne_compat.apply()

# isort: split
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
