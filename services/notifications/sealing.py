"""Webhook signing secrets at rest: sealed with AES-256-GCM.

The service must sign with an endpoint's secret, so it cannot keep a hash of it.
The database holds it sealed under a key that lives in the settings
(``NEXANEST_NOTIFICATIONS__SECRET_KEY``, or derived from the token secret when
unset), never in the database: a dump, a backup or a read of the table yields
nothing usable. The endpoint's and its user's ids are the associated data, so a
sealed secret copied onto another endpoint does not open.

Sealed form: version byte ``1``, a 12-byte random nonce, the ciphertext with its tag.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.settings import Settings

_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12
#: Domain separation of the key derived from the token secret.
_DERIVATION_LABEL: Final = b"nexanest notifications: webhook secrets at rest, v1"


class SecretUnreadable(Exception):
    """A sealed secret does not open with this key (another key, or altered)."""


class SecretBox:
    """Seals and opens the secrets of webhook endpoints with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key has 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The key of ``notifications.secret_key`` (64 hex digits), or one derived
        from ``services.token_secret``. Raises ``ConfigurationError`` (never
        echoing a value) when neither is usable."""
        configured = settings.notifications.secret_key
        if configured is not None:
            try:
                key = bytes.fromhex(configured.get_secret_value())
            except ValueError:
                key = b""
            if len(key) != 32:
                raise ConfigurationError("NEXANEST_NOTIFICATIONS__SECRET_KEY must be 64 hex digits")
            return cls(key)
        token_secret = settings.services.token_secret_or_raise().get_secret_value().encode()
        return cls(hmac.new(token_secret, _DERIVATION_LABEL, hashlib.sha256).digest())

    def seal(self, secret: str, endpoint_id: uuid.UUID, user_id: uuid.UUID) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, secret.encode(), _associated(endpoint_id, user_id))

    def open(self, sealed: bytes, endpoint_id: uuid.UUID, user_id: uuid.UUID) -> str:
        """The secret; raises ``SecretUnreadable`` when it does not open."""
        if len(sealed) < 1 + _NONCE_BYTES or sealed[:1] != _VERSION:
            raise SecretUnreadable("not a sealed secret of this version")
        nonce, ciphertext = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, _associated(endpoint_id, user_id)).decode()
        except InvalidTag:
            raise SecretUnreadable("the sealed secret does not open with this key") from None


def _associated(endpoint_id: uuid.UUID, user_id: uuid.UUID) -> bytes:
    return endpoint_id.bytes + user_id.bytes
