"""The public surface is exactly what it is meant to be."""

from __future__ import annotations

import soapreceptor


def test_exported_names() -> None:
    assert sorted(soapreceptor.__all__) == sorted(
        [
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
    )
    for name in soapreceptor.__all__:
        assert hasattr(soapreceptor, name)


def test_event_types_compare_as_strings() -> None:
    assert str(soapreceptor.EventType.PING) == "Ping"
    assert "Ping" in {soapreceptor.EventType.PING}
    assert "AssignmentSubmitted" in set(soapreceptor.EventType)
