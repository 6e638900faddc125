"""The jobs on the notification queue, and the ids that make delivery idempotent.

Two kinds of job travel through the Redis queue (``queue.py``), as JSON:

- ``Fanout``: a notice to deliver to its user (an alert fired, an operational
  alert). The worker turns it into one ``Delivery`` per channel: the inbox and
  each enabled webhook endpoint of the user.
- ``Delivery``: one notice to one channel, with the attempts made so far.

Every id is derived, never drawn: a notice's from what caused it (the n-th firing
of an alert, a system event for an admin), a delivery's from its notice, channel
and endpoint. A job done twice (a worker killed after delivering, before its
acknowledgement; an evaluator that fired again after a crash) therefore produces
the same inbox row (inserted once) and the same ``webhook-id`` (the receiver's
idempotency key): at-least-once delivery, never a second distinct notification.
"""

from __future__ import annotations

import uuid
from typing import Final, Literal

import msgspec

#: The namespace of every derived id (uuid5); fixed for ever.
_NAMESPACE: Final = uuid.UUID("5f0c7a52-93a4-4f8e-9b57-0d1c6a1e2b34")

NoticeKind = Literal["message", "alert_fired", "webhook_disabled", "ops_alert"]
ChannelName = Literal["inbox", "webhook"]


class Notice(msgspec.Struct, frozen=True):
    """What a user is told. ``data`` holds the figures as strings (symbol, price...)."""

    notification_id: uuid.UUID
    user_id: uuid.UUID
    kind: NoticeKind
    title: str
    body: str
    created_ns: int
    data: dict[str, str] = {}
    alert_id: uuid.UUID | None = None


class Fanout(msgspec.Struct, frozen=True, tag="fanout"):
    notice: Notice


class Delivery(msgspec.Struct, frozen=True, tag="delivery"):
    delivery_id: uuid.UUID
    notice: Notice
    channel: ChannelName
    endpoint_id: uuid.UUID | None = None
    #: Attempts made before this one.
    attempt: int = 0


Job = Fanout | Delivery

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Job)


def encode_job(job: Job) -> bytes:
    return _encoder.encode(job)


def decode_job(raw: bytes) -> Job:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) for bytes that are not a job."""
    job: Job = _decoder.decode(raw)
    return job


def alert_notification_id(alert_id: uuid.UUID, firing: int) -> uuid.UUID:
    """The notice of the ``firing``-th firing (1, 2, ...) of an alert."""
    return uuid.uuid5(_NAMESPACE, f"alert:{alert_id}:{firing}")


def ops_notification_id(event_id: str, user_id: uuid.UUID) -> uuid.UUID:
    """The notice of a system event for one subscribed admin."""
    return uuid.uuid5(_NAMESPACE, f"ops:{event_id}:{user_id}")


def delivery_id(notification_id: uuid.UUID, channel: ChannelName, endpoint_id: uuid.UUID | None) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"delivery:{notification_id}:{channel}:{endpoint_id or ''}")


def webhook_id(notification_id: uuid.UUID) -> str:
    """The Standard Webhooks ``webhook-id`` of a notice: one per notice, whichever
    endpoint and attempt carries it."""
    return f"msg_{notification_id.hex}"
