"""The encryption of webhook secrets at rest: AES-256-GCM under the engine's key.

A stored secret is ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext``,
authenticated with the webhook's external id as associated data, so a ciphertext copied to
another webhook's row does not decrypt. The key id (the first bytes of the key's SHA-256)
says which configured key sealed it: during a rotation the old keys still open what they
sealed, and :meth:`SecretBox.stale` tells which secrets to re-encrypt under the current one.
"""

from __future__ import annotations

import hashlib
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stoker.errors import ConfigError

_VERSION = b"\x01"
_NONCE = 12


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


class SecretBox:
    """Seals and opens webhook secrets with the configured keys (current first)."""

    def __init__(self, keys: list[bytes]) -> None:
        self._keys = {_key_id(k): AESGCM(k) for k in keys}
        self._current = _key_id(keys[0]) if keys else None

    def seal(self, secret: str, webhook: uuid.UUID) -> bytes:
        """``secret`` encrypted for the webhook ``webhook``; ConfigError without a key."""
        if self._current is None:
            raise ConfigError(
                "the engine has no STOKER_WEBHOOK_SECRET_KEY, so it cannot store webhook "
                'secrets: set it to 32 random bytes in base64 (README "Webhooks")'
            )
        nonce = os.urandom(_NONCE)
        sealed = self._keys[self._current].encrypt(nonce, secret.encode(), webhook.bytes)
        return _VERSION + self._current + nonce + sealed

    def open(self, blob: bytes, webhook: uuid.UUID) -> str:
        """The secret ``blob`` holds; ConfigError when no configured key sealed it."""
        blob = bytes(blob)
        aead = self._keys.get(blob[1:5]) if blob[:1] == _VERSION else None
        if aead is None:
            raise ConfigError(
                f"the secret of webhook {webhook} was encrypted with a key the engine does not "
                "have: put that key in STOKER_WEBHOOK_OLD_SECRET_KEYS"
            )
        try:
            return aead.decrypt(blob[5 : 5 + _NONCE], blob[5 + _NONCE :], webhook.bytes).decode()
        except InvalidTag:
            raise ConfigError(f"the stored secret of webhook {webhook} does not decrypt") from None

    def stale(self, blob: bytes) -> bool:
        """Whether ``blob`` was sealed by a key other than the current one."""
        return self._current is not None and bytes(blob)[1:5] != self._current


__all__ = ["SecretBox"]
