"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A message is sent with three headers: ``webhook-id`` (the message's id, the same
on every attempt: the receiver's idempotency key), ``webhook-timestamp`` (Unix
seconds of this attempt) and ``webhook-signature``: ``v1,`` and the base64 of
HMAC-SHA256 over ``<id>.<timestamp>.<body>``, keyed with the base64-decoded part
of the endpoint's ``whsec_...`` secret. The receiver recomputes it, compares in
constant time, and refuses timestamps far from its clock (replays).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
#: 24 random bytes (192 bits), as the specification suggests (between 24 and 64).
_SECRET_BYTES: Final = 24


def new_secret() -> str:
    """A fresh signing secret, ``whsec_<base64 of 24 random bytes>``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; raises ``ValueError`` for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ and base64") from None


def signature(key: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value: ``v1,<base64 HMAC-SHA256>``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(key: bytes, msg_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt (the body is JSON)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature(key, msg_id, timestamp_s, body),
        "content-type": "application/json",
    }
