"""Sealed secrets: readable only with the shared key, never in the sealed text."""

from __future__ import annotations

import pytest

from shared.secrets import PREFIX, SecretBox, SecretError, new_key

PROXY = "http://bob:hunter2@proxy.example:8080"


def test_seal_round_trip_hides_the_secret() -> None:
    box = SecretBox(new_key())
    sealed = box.seal(PROXY)
    assert sealed.startswith(PREFIX)
    assert "hunter2" not in sealed
    assert "bob" not in sealed
    assert box.unseal(sealed) == PROXY
    assert box.seal(PROXY) != sealed  # a fresh nonce every time


def test_wrong_key_or_tampering_is_refused() -> None:
    sealed = SecretBox(new_key()).seal(PROXY)
    with pytest.raises(SecretError):
        SecretBox(new_key()).unseal(sealed)
    box = SecretBox(new_key())
    good = box.seal(PROXY)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretError):
        box.unseal(tampered)
    with pytest.raises(SecretError):
        box.unseal(PROXY)


@pytest.mark.parametrize("key", ["short", "!!!notbase64!!!", ""])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(SecretError):
        SecretBox(key)
