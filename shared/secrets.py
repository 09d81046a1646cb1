"""Sealed secrets: a proxy URL with a password travels in events and KV only encrypted.

Every service gets the same ``SECRET_KEY`` (32 random bytes, base64url). The gateway seals what
a client sent; the recorder unseals it right before use. Nothing readable reaches NATS.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "sealed:v1:"
_NONCE = 12


class SecretError(ValueError):
    """A sealed value could not be opened (wrong key, tampered, or not sealed)."""


def new_key() -> str:
    """A fresh SECRET_KEY value."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        msg = "SECRET_KEY is not base64url"
        raise SecretError(msg) from exc
    if len(raw) != 32:
        msg = "SECRET_KEY must be 32 bytes (base64url)"
        raise SecretError(msg)
    return raw


class SecretBox:
    """AES-256-GCM with a random nonce per value."""

    def __init__(self, key: str) -> None:
        self._aead = AESGCM(_decode_key(key))

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), PREFIX.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, token: str) -> str:
        if not token.startswith(PREFIX):
            msg = "value is not sealed"
            raise SecretError(msg)
        try:
            blob = base64.urlsafe_b64decode(token[len(PREFIX) :])
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], PREFIX.encode()).decode()
        except (ValueError, InvalidTag) as exc:
            msg = "sealed value cannot be opened with this SECRET_KEY"
            raise SecretError(msg) from exc
