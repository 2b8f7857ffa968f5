"""The HMAC-SHA1 signature and the keyring (protocol.md section 4)."""

from __future__ import annotations

import hmac

import pytest

from soapreceptor.signature import Keyring, is_unsigned, sign
from tests.support import KEY_1, KEY_2, VECTOR_TIMESTAMP, VECTORS


@pytest.mark.parametrize(("key", "timestamp", "signature"), VECTORS)
def test_protocol_vectors(key: str, timestamp: str, signature: str) -> None:
    assert sign(key, timestamp) == signature
    assert sign(key.encode(), timestamp) == signature


def test_timestamp_is_signed_as_text_not_as_instant() -> None:
    # The same instant written two ways signs differently: never re-serialise.
    assert sign(KEY_2, "2006-05-23T23:22:30Z") != sign(KEY_2, "2006-05-23T23:22:30.000Z")


@pytest.mark.parametrize(("key", "timestamp", "signature"), VECTORS)
def test_keyring_verifies_with_any_key(key: str, timestamp: str, signature: str) -> None:
    assert Keyring([KEY_1, KEY_2]).verify(timestamp, signature)
    assert Keyring([KEY_2, KEY_1]).verify(timestamp, signature)


def test_keyring_refuses_other_keys_and_other_timestamps() -> None:
    keyring = Keyring([KEY_1])
    assert not keyring.verify(VECTOR_TIMESTAMP, "SCKBAzx2/Kt3aYqRcDjBAqOSm+o=")  # KEY_2's
    assert not keyring.verify("2006-05-23T23:22:31Z", "FNJJstGUL4jPSEZmY3zS6Cl+gNw=")
    assert not keyring.verify(VECTOR_TIMESTAMP, "FNJJstGUL4jPSEZmY3zS6Cl+gNw")  # truncated
    assert not keyring.verify(VECTOR_TIMESTAMP, "FNJJstGUL4jPSEZmY3zS6Cl+gNw=\u00e9")  # non-ASCII
    assert not Keyring().verify(VECTOR_TIMESTAMP, "FNJJstGUL4jPSEZmY3zS6Cl+gNw=")


def test_surrounding_white_space_in_signature_is_ignored() -> None:
    assert Keyring([KEY_1]).verify(VECTOR_TIMESTAMP, "\n  FNJJstGUL4jPSEZmY3zS6Cl+gNw=\n")


def test_every_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("soapreceptor.signature.hmac.compare_digest", counting)
    # The matching key comes first: the others must still be tried, so the
    # time taken does not reveal which key matched.
    assert Keyring([KEY_1, KEY_2, "third"]).verify(VECTOR_TIMESTAMP, "FNJJstGUL4jPSEZmY3zS6Cl+gNw=")
    assert len(calls) == 3


def test_keyring_never_shows_its_secrets() -> None:
    keyring = Keyring([KEY_1, KEY_2, KEY_1])
    assert len(keyring) == 2  # duplicates collapse
    for text in (repr(keyring), str(keyring)):
        assert KEY_1 not in text
        assert KEY_2 not in text


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Keyring(["ok", ""])


@pytest.mark.parametrize(
    ("value", "unsigned"),
    [
        (None, True),
        ("", True),
        ("  ", True),
        ("DEPRECATED", True),
        (" DEPRECATED\n", True),
        ("abc=", False),
        ("deprecated", False),
    ],
)
def test_is_unsigned(value: str | None, unsigned: bool) -> None:
    assert is_unsigned(value) is unsigned
