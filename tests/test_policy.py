"""Accepting or refusing a parsed notification: signature, unsigned messages, freshness."""

from __future__ import annotations

import datetime as dt

import pytest

from soapreceptor import errors, wire
from soapreceptor.model import Notification
from soapreceptor.policy import Policy
from soapreceptor.signature import Keyring, sign
from tests.support import KEY_1, KEY_2, amazon_envelope

SIGNED_AT = dt.datetime(2006, 5, 23, 23, 22, 30, tzinfo=dt.UTC)


def notification(
    signature: str | None = "SCKBAzx2/Kt3aYqRcDjBAqOSm+o=", timestamp: str = "2006-05-23T23:22:30Z"
) -> Notification:
    return wire.parse_notify(amazon_envelope(signature=signature, timestamp=timestamp))


def policy(**overrides: object) -> Policy:
    options: dict[str, object] = {"keyring": Keyring([KEY_2]), "tolerance": 300.0, "accept_unsigned": False}
    options.update(overrides)
    return Policy(**options)  # type: ignore[arg-type]


def test_accepts_a_good_message_inside_the_window() -> None:
    policy().check(notification(), SIGNED_AT + dt.timedelta(seconds=300))
    policy().check(notification(), SIGNED_AT - dt.timedelta(seconds=300))


def test_rotation_accepts_either_key() -> None:
    rotating = policy(keyring=Keyring([KEY_1, KEY_2]))
    rotating.check(notification(), SIGNED_AT)
    rotating.check(notification(signature=sign(KEY_1, "2006-05-23T23:22:30Z")), SIGNED_AT)


def test_signature_mismatch() -> None:
    with pytest.raises(errors.SignatureMismatch) as caught:
        policy(keyring=Keyring([KEY_1])).check(notification(), SIGNED_AT)
    assert KEY_1 not in caught.value.faultstring
    assert "2006-05-23T23:22:30Z" in caught.value.faultstring


def test_signature_of_another_spelling_of_the_same_instant_is_refused() -> None:
    # Signed over "...30Z" but sent with "...30.000Z": same instant, different text.
    with pytest.raises(errors.SignatureMismatch):
        policy().check(notification(timestamp="2006-05-23T23:22:30.000Z"), SIGNED_AT)


@pytest.mark.parametrize(("skew", "word"), [(301, "old"), (-301, "future"), (10**9, "old")])
def test_stale_timestamp(skew: int, word: str) -> None:
    with pytest.raises(errors.StaleTimestamp, match=word) as caught:
        policy().check(notification(), SIGNED_AT + dt.timedelta(seconds=skew))
    assert "300" in caught.value.faultstring


def test_tolerance_zero_turns_freshness_off() -> None:
    policy(tolerance=0).check(notification(), SIGNED_AT + dt.timedelta(days=7000))


def test_tolerance_is_configurable() -> None:
    with pytest.raises(errors.StaleTimestamp):
        policy(tolerance=5).check(notification(), SIGNED_AT + dt.timedelta(seconds=6))
    policy(tolerance=5).check(notification(), SIGNED_AT + dt.timedelta(seconds=5))


@pytest.mark.parametrize(("signature", "word"), [(None, "missing"), ("", "missing"), ("DEPRECATED", "DEPRECATED")])
def test_unsigned_refused_by_default(signature: str | None, word: str) -> None:
    with pytest.raises(errors.UnsignedMessage, match=word) as caught:
        policy().check(notification(signature=signature), SIGNED_AT)
    assert "SOAPRECEPTOR_ACCEPT_UNSIGNED" in caught.value.faultstring


@pytest.mark.parametrize("signature", [None, "", "DEPRECATED"])
def test_unsigned_accepted_when_chosen(signature: str | None) -> None:
    policy(accept_unsigned=True).check(notification(signature=signature), SIGNED_AT)
    policy(accept_unsigned=True, keyring=Keyring()).check(notification(signature=signature), SIGNED_AT)


def test_accepting_unsigned_does_not_accept_a_wrong_signature() -> None:
    with pytest.raises(errors.SignatureMismatch):
        policy(accept_unsigned=True).check(notification(signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA="), SIGNED_AT)
    with pytest.raises(errors.SignatureMismatch, match="no secret"):
        policy(accept_unsigned=True, keyring=Keyring()).check(notification(), SIGNED_AT)


def test_unsigned_messages_are_still_checked_for_freshness() -> None:
    with pytest.raises(errors.StaleTimestamp):
        policy(accept_unsigned=True).check(notification(signature=None), SIGNED_AT + dt.timedelta(hours=1))


def test_a_bad_signature_is_reported_before_staleness() -> None:
    with pytest.raises(errors.SignatureMismatch):
        policy(keyring=Keyring([KEY_1])).check(notification(), SIGNED_AT + dt.timedelta(days=1))
