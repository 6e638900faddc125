"""Where a notice goes: one small interface, ``Channel.deliver(job) -> Outcome``.

- ``InboxChannel``: the user's in-app inbox (the ``notifications`` table), written
  as the job's user; a notice already there is not written again.
- ``WebhookChannel``: a Standard Webhooks POST to one endpoint of the user
  (``signing.py``), signed with the endpoint's secret, opened from its sealed form
  (``sealing.py``). 2xx is delivered; anything else, a timeout or a refused
  connection is a failed attempt, counted against the endpoint: the
  ``disable_after``-th failure in a row disables it and tells its owner in the
  inbox, in the same transaction. A deleted or disabled endpoint, or one whose
  host resolves to a private address (``destinations.py``), abandons the delivery.

A channel never retries: the worker (``worker.py``) decides from the outcome.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import asyncpg
import httpx
import msgspec

from nexanest.pipeline import metrics
from nexanest.services.notifications import repository
from nexanest.services.notifications.destinations import refused_resolved
from nexanest.services.notifications.jobs import Delivery, Notice, webhook_id
from nexanest.services.notifications.sealing import SecretBox, SecretUnreadable
from nexanest.services.notifications.signing import secret_key, signed_headers
from nexanest.services.rls import acting_as

OutcomeKind = Literal["delivered", "failed", "abandoned"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """``failed``: this attempt failed, another may succeed; ``abandoned``: no
    attempt can (the endpoint is gone or disabled)."""

    kind: OutcomeKind
    status_code: int | None = None
    #: A short reason for the delivery record: never a response body or a secret.
    error: str | None = None


DELIVERED: Final = Outcome("delivered")


class Channel(Protocol):
    async def deliver(self, job: Delivery) -> Outcome:
        """Deliver ``job`` once. Raises only for trouble of the service's own stores
        (the database, Redis), which the worker retries like a failed attempt."""
        ...


class InboxChannel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def deliver(self, job: Delivery) -> Outcome:
        async with acting_as(self._pool, job.notice.user_id) as conn:
            await repository.insert_notice(conn, job.notice)
        return DELIVERED


class _Payload(msgspec.Struct, frozen=True):
    type: str
    timestamp: str
    data: dict[str, str | None]


_encode_payload: Final = msgspec.json.Encoder().encode


def webhook_body(notice: Notice) -> bytes:
    """The JSON a receiver gets: ``type`` (``alert.fired``...), ``timestamp`` (the
    notice's, RFC 3339 UTC), and ``data``: the notice's ids, title, body and figures.
    The same bytes on every attempt."""
    created_s, created_ns = divmod(notice.created_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created_s)) + f".{created_ns // 1000:06d}Z"
    data: dict[str, str | None] = {
        "notification_id": str(notice.notification_id),
        "alert_id": None if notice.alert_id is None else str(notice.alert_id),
        "title": notice.title,
        "body": notice.body,
        **notice.data,
    }
    return _encode_payload(_Payload(type=notice.kind.replace("_", "."), timestamp=stamp, data=data))


class WebhookChannel:
    def __init__(
        self,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        box: SecretBox,
        *,
        disable_after: int,
        allow_private: bool = False,
    ) -> None:
        self._pool = pool
        self._http = http
        self._box = box
        self._disable_after = disable_after
        self._allow_private = allow_private

    async def deliver(self, job: Delivery) -> Outcome:
        if job.endpoint_id is None:
            return Outcome("abandoned", error="no endpoint")
        user_id = job.notice.user_id
        async with acting_as(self._pool, user_id) as conn:
            endpoint = await repository.endpoint_for_delivery(conn, job.endpoint_id)
        if endpoint is None:
            return Outcome("abandoned", error="endpoint deleted")
        if endpoint["disabled_at"] is not None:
            return Outcome("abandoned", error="endpoint disabled")
        try:
            key = secret_key(self._box.open(endpoint["secret_sealed"], job.endpoint_id, user_id))
        except (SecretUnreadable, ValueError):
            return Outcome("abandoned", error="secret unreadable")
        if not self._allow_private and (reason := await refused_resolved(endpoint["url"])) is not None:
            return Outcome("abandoned", error=reason[:200])
        body = webhook_body(job.notice)
        headers = signed_headers(key, webhook_id(job.notice.notification_id), int(time.time()), body)
        outcome = await self._post(endpoint["url"], body, headers)
        if outcome.kind == "delivered":
            async with acting_as(self._pool, user_id) as conn:
                await repository.endpoint_succeeded(conn, job.endpoint_id)
            return outcome
        await self._failed(user_id, job.endpoint_id, endpoint["url"])
        return outcome

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        try:
            # Streamed and never read: only the status counts, and a receiver's body
            # (however large) is not loaded.
            async with self._http.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
        except httpx.TimeoutException:
            metrics.NOTIFICATIONS_WEBHOOK_FAILURES.labels("timeout").inc()
            return Outcome("failed", error="timeout")
        except httpx.TransportError as exc:
            metrics.NOTIFICATIONS_WEBHOOK_FAILURES.labels("connect").inc()
            return Outcome("failed", error=f"connection: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            metrics.NOTIFICATIONS_WEBHOOK_FAILURES.labels("error").inc()
            return Outcome("failed", error=type(exc).__name__)
        if 200 <= status < 300:
            return Outcome("delivered", status_code=status)
        metrics.NOTIFICATIONS_WEBHOOK_FAILURES.labels("status").inc()
        return Outcome("failed", status_code=status, error=f"HTTP {status}")

    async def _failed(self, user_id: uuid.UUID, endpoint_id: uuid.UUID, url: str) -> None:
        async with acting_as(self._pool, user_id) as conn:
            disabled = await repository.endpoint_failed(conn, endpoint_id, self._disable_after)
            if disabled:
                metrics.NOTIFICATIONS_ENDPOINTS_DISABLED.inc()
                await repository.insert_notice(
                    conn,
                    Notice(
                        notification_id=uuid.uuid4(),
                        user_id=user_id,
                        kind="webhook_disabled",
                        title="A webhook endpoint was disabled",
                        body=(
                            f"Deliveries to {url[:1500]} failed {self._disable_after} times in a row, so it "
                            "receives nothing more. Delete it and add it again once it answers."
                        ),
                        created_ns=time.time_ns(),
                        data={"endpoint_id": str(endpoint_id)},
                    ),
                )
