"""The notifications service's routes: alerts, the inbox, webhook endpoints and
the admins' subscription to operational alerts.

Every route acts for the user its bearer token names and touches the database
only through ``acting_as`` (``services/rls.py``): another user's alert,
notification or endpoint answers 404 exactly as one that does not exist.

No ``from __future__ import annotations`` here: the routes close over their
resources (``services/app.py``, ``Resource``).
"""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Final

import asyncpg
import redis.asyncio as redis
from fastapi import APIRouter, Depends, Query, Response, status
from redis.exceptions import RedisError

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource
from nexanest.services.notifications import repository
from nexanest.services.notifications.conditions import Rule, State, initial_state
from nexanest.services.notifications.destinations import refused_literal
from nexanest.services.notifications.evaluator import announce_change, plain
from nexanest.services.notifications.models import (
    AlertIn,
    AlertOut,
    AlertPatch,
    DeliveryOut,
    NotificationOut,
    NotificationPage,
    OpsSubscription,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    check_shape,
)
from nexanest.services.notifications.sealing import SecretBox
from nexanest.services.notifications.signing import new_secret
from nexanest.services.problems import Problem, problem_responses
from nexanest.services.rls import acting_as
from nexanest.services.tokens import AUTH_RESPONSES, BearerAuth, Identity, TokenVerifier

_log = get_logger("nexanest.services.notifications")
_NO_ALERT: Final = "no such alert"
_NO_NOTIFICATION: Final = "no such notification"
_NO_WEBHOOK: Final = "no such webhook endpoint"
_CURSOR: Final = r"^[0-9]{1,20}_[0-9a-f]{32}$"
_MICROSECOND: Final = timedelta(microseconds=1)


def build_router(
    settings: Settings,
    *,
    verifier: TokenVerifier,
    db: Resource[asyncpg.Pool],
    quotes: Resource[redis.Redis],
    queue_redis: Resource[redis.Redis],
    box: SecretBox,
) -> APIRouter:
    """The routes, over the given resources."""
    n = settings.notifications
    current_user = BearerAuth(verifier)
    User = Annotated[Identity, Depends(current_user)]
    Db = Annotated[asyncpg.Pool, Depends(db.get)]
    Quotes = Annotated[redis.Redis, Depends(quotes.get)]
    Changes = Annotated[redis.Redis, Depends(queue_redis.get)]
    router = APIRouter(responses={**AUTH_RESPONSES, **problem_responses(404, 422)})

    async def current_price(client: redis.Redis, symbol: str) -> Decimal | None:
        """The symbol's latest quote, or None (none yet, or Redis away: the alert
        then starts armed, and its first crossing fires)."""
        try:
            raw = await client.hget(settings.redis.quote_key_prefix + symbol, "price")
        except (RedisError, OSError) as exc:
            _log.warning("quote_unavailable", error=type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            return Decimal(raw.decode() if isinstance(raw, bytes) else str(raw))
        except InvalidOperation:
            return None

    async def announce(client: redis.Redis, user_id: uuid.UUID, alert_id: uuid.UUID) -> None:
        """After the commit. A lost announcement is made good by the evaluator's
        periodic re-read (``index_refresh_s``)."""
        try:
            await announce_change(client, n.key_prefix, user_id, alert_id)
        except (RedisError, OSError) as exc:
            _log.warning("alert_change_not_announced", error=type(exc).__name__)

    @router.post(
        "/alerts",
        status_code=status.HTTP_201_CREATED,
        responses=problem_responses(409),
        tags=["alerts"],
        summary="Set a price alert",
    )
    async def create_alert(
        body: AlertIn, user: User, pool: Db, quotes_client: Quotes, changes: Changes, response: Response
    ) -> AlertOut:
        """A crossing alert whose price is already past its threshold starts
        ``fired``: only a crossing notifies. 409 when you have as many alerts as allowed."""
        threshold, hysteresis = Decimal(body.threshold), Decimal(body.hysteresis)
        rule = Rule(body.kind, threshold, hysteresis, body.window_s)
        state = initial_state(rule, await current_price(quotes_client, body.symbol))
        try:
            async with acting_as(pool, user.user_id) as conn:
                row = await repository.create_alert(
                    conn,
                    user.user_id,
                    symbol=body.symbol,
                    kind=body.kind,
                    threshold=threshold,
                    hysteresis=hysteresis,
                    window_s=body.window_s,
                    enabled=body.enabled,
                    state=state,
                    max_per_user=n.max_alerts_per_user,
                )
        except repository.TooMany:
            raise Problem(409, f"you have {n.max_alerts_per_user} alerts, the most allowed") from None
        await announce(changes, user.user_id, row["alert_id"])
        response.headers["Location"] = f"/alerts/{row['alert_id']}"
        return _alert(row)

    @router.get("/alerts", tags=["alerts"], summary="Your alerts")
    async def list_alerts(user: User, pool: Db) -> list[AlertOut]:
        """Oldest first."""
        async with acting_as(pool, user.user_id) as conn:
            rows = await repository.list_alerts(conn)
        return [_alert(r) for r in rows]

    @router.get("/alerts/{alert_id}", tags=["alerts"], summary="One alert")
    async def get_alert(alert_id: uuid.UUID, user: User, pool: Db) -> AlertOut:
        async with acting_as(pool, user.user_id) as conn:
            row = await repository.get_alert(conn, alert_id)
        if row is None:
            raise Problem(404, _NO_ALERT)
        return _alert(row)

    @router.patch("/alerts/{alert_id}", tags=["alerts"], summary="Change an alert")
    async def patch_alert(
        alert_id: uuid.UUID, body: AlertPatch, user: User, pool: Db, quotes_client: Quotes, changes: Changes
    ) -> AlertOut:
        async with acting_as(pool, user.user_id) as conn:
            row = await repository.get_alert(conn, alert_id, lock=True)
            if row is None:
                raise Problem(404, _NO_ALERT)
            threshold = Decimal(body.threshold) if body.threshold is not None else row["threshold"]
            hysteresis = Decimal(body.hysteresis) if body.hysteresis is not None else row["hysteresis"]
            window_s = body.window_s if body.window_s is not None else row["window_s"]
            enabled = body.enabled if body.enabled is not None else row["enabled"]
            try:
                check_shape(row["kind"], threshold, hysteresis, window_s)
            except ValueError as exc:
                raise Problem(422, str(exc)) from None
            state: State = row["state"]
            moved = threshold != row["threshold"] or hysteresis != row["hysteresis"] or window_s != row["window_s"]
            if moved or (enabled and not row["enabled"]):
                rule = Rule(row["kind"], threshold, hysteresis, window_s)
                state = initial_state(rule, await current_price(quotes_client, row["symbol"]))
            updated = await repository.update_alert(
                conn,
                alert_id,
                threshold=threshold,
                hysteresis=hysteresis,
                window_s=window_s,
                enabled=enabled,
                state=state,
            )
        await announce(changes, user.user_id, alert_id)
        return _alert(updated)

    @router.delete(
        "/alerts/{alert_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["alerts"], summary="Delete an alert"
    )
    async def delete_alert(alert_id: uuid.UUID, user: User, pool: Db, changes: Changes) -> Response:
        """Its notifications stay in the inbox."""
        async with acting_as(pool, user.user_id) as conn:
            deleted = await repository.delete_alert(conn, alert_id)
        if not deleted:
            raise Problem(404, _NO_ALERT)
        await announce(changes, user.user_id, alert_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/notifications", tags=["inbox"], summary="Your inbox, newest first")
    async def list_notifications(
        user: User,
        pool: Db,
        unread: Annotated[bool, Query(description="only those not read yet")] = False,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(pattern=_CURSOR, description="next_cursor of a page")] = None,
    ) -> NotificationPage:
        before = _parse_cursor(cursor) if cursor is not None else None
        async with acting_as(pool, user.user_id) as conn:
            rows = await repository.notifications_page(conn, unread_only=unread, before=before, limit=limit)
        next_cursor = _cursor(rows[-1]) if len(rows) == limit else None
        return NotificationPage(items=[_notification(r) for r in rows], next_cursor=next_cursor)

    @router.post("/notifications/{notification_id}/read", tags=["inbox"], summary="Mark a notification read")
    async def read_notification(notification_id: uuid.UUID, user: User, pool: Db) -> NotificationOut:
        """Idempotent: a second call keeps the first reading's time."""
        async with acting_as(pool, user.user_id) as conn:
            row = await repository.mark_read(conn, notification_id)
        if row is None:
            raise Problem(404, _NO_NOTIFICATION)
        return _notification(row)

    @router.post(
        "/webhooks",
        status_code=status.HTTP_201_CREATED,
        responses=problem_responses(409),
        tags=["webhooks"],
        summary="Add a webhook endpoint",
    )
    async def create_webhook(body: WebhookIn, user: User, pool: Db, response: Response) -> WebhookCreated:
        """Notifications are POSTed to ``url`` as Standard Webhooks, signed with the
        ``secret`` of the answer (``whsec_...``), which is shown this once only.
        422 for a URL on a private, loopback or reserved address (unless the
        service allows them); 409 when you have as many endpoints as allowed."""
        if not n.webhook_allow_private and (reason := refused_literal(str(body.url))) is not None:
            raise Problem(422, f"{reason}; this service calls public addresses only")
        endpoint_id = uuid.uuid4()
        secret = new_secret()
        sealed = box.seal(secret, endpoint_id, user.user_id)
        try:
            async with acting_as(pool, user.user_id) as conn:
                row = await repository.create_endpoint(
                    conn,
                    endpoint_id,
                    user.user_id,
                    url=str(body.url),
                    description=body.description,
                    secret_sealed=sealed,
                    max_per_user=n.max_webhooks_per_user,
                )
        except repository.TooMany:
            raise Problem(409, f"you have {n.max_webhooks_per_user} webhook endpoints, the most allowed") from None
        response.headers["Location"] = f"/webhooks/{endpoint_id}"
        response.headers["Cache-Control"] = "no-store"  # the secret must not stay in a cache
        return WebhookCreated(**_webhook(row).model_dump(), secret=secret)

    @router.get("/webhooks", tags=["webhooks"], summary="Your webhook endpoints")
    async def list_webhooks(user: User, pool: Db) -> list[WebhookOut]:
        """Without their secrets."""
        async with acting_as(pool, user.user_id) as conn:
            rows = await repository.list_endpoints(conn)
        return [_webhook(r) for r in rows]

    @router.delete(
        "/webhooks/{webhook_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["webhooks"],
        summary="Delete a webhook endpoint",
    )
    async def delete_webhook(webhook_id: uuid.UUID, user: User, pool: Db) -> Response:
        """With its delivery records; deliveries still queued for it are abandoned."""
        async with acting_as(pool, user.user_id) as conn:
            deleted = await repository.delete_endpoint(conn, webhook_id)
        if not deleted:
            raise Problem(404, _NO_WEBHOOK)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/webhooks/{webhook_id}/deliveries", tags=["webhooks"], summary="Recent deliveries to an endpoint")
    async def webhook_deliveries(
        webhook_id: uuid.UUID, user: User, pool: Db, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> list[DeliveryOut]:
        """Newest first: each delivery's attempts, status and last error."""
        async with acting_as(pool, user.user_id) as conn:
            rows = await repository.endpoint_deliveries(conn, webhook_id, limit)
        if rows is None:
            raise Problem(404, _NO_WEBHOOK)
        return [
            DeliveryOut(
                id=r["delivery_id"],
                notification_id=r["notification_id"],
                webhook_id=r["webhook_id"],
                attempts=r["attempts"],
                status=r["status"],
                last_status_code=r["last_status_code"],
                last_error=r["last_error"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                delivered_at=r["delivered_at"],
            )
            for r in rows
        ]

    def admin_only(user: Identity) -> None:
        if user.role != "admin":
            raise Problem(403, "operational alerts are for admins")

    ops = problem_responses(403)

    @router.get("/ops-alerts/subscription", responses=ops, tags=["ops"], summary="Your operational alerts (admins)")
    async def ops_subscription(user: User, pool: Db) -> OpsSubscription:
        admin_only(user)
        async with acting_as(pool, user.user_id) as conn:
            subscribed = await repository.ops_subscribed(conn)
        return OpsSubscription(subscribed=subscribed, event_types=list(n.ops_event_types))

    @router.put("/ops-alerts/subscription", responses=ops, tags=["ops"], summary="Receive operational alerts")
    async def subscribe_ops(user: User, pool: Db) -> OpsSubscription:
        """System events of the listed types reach your inbox and webhooks. Admins only (403)."""
        admin_only(user)
        async with acting_as(pool, user.user_id) as conn:
            await repository.subscribe_ops(conn, user.user_id)
        return OpsSubscription(subscribed=True, event_types=list(n.ops_event_types))

    @router.delete("/ops-alerts/subscription", responses=ops, tags=["ops"], summary="Stop operational alerts")
    async def unsubscribe_ops(user: User, pool: Db) -> OpsSubscription:
        admin_only(user)
        async with acting_as(pool, user.user_id) as conn:
            await repository.unsubscribe_ops(conn)
        return OpsSubscription(subscribed=False, event_types=list(n.ops_event_types))

    return router


def _alert(row: asyncpg.Record) -> AlertOut:
    return AlertOut(
        id=row["alert_id"],
        symbol=row["symbol"],
        kind=row["kind"],
        threshold=plain(row["threshold"]),
        hysteresis=plain(row["hysteresis"]),
        window_s=row["window_s"],
        enabled=row["enabled"],
        state=row["state"],
        fired_count=row["fired_count"],
        last_fired_at=row["last_fired_at"],
        last_fired_price=None if row["last_fired_price"] is None else plain(row["last_fired_price"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _notification(row: asyncpg.Record) -> NotificationOut:
    return NotificationOut(
        id=row["notification_id"],
        kind=row["kind"],
        title=row["title"],
        body=row["body"],
        data=dict(repository.data_of(row["data"])),
        alert_id=row["alert_id"],
        created_at=row["created_at"],
        read_at=row["read_at"],
    )


def _webhook(row: asyncpg.Record) -> WebhookOut:
    return WebhookOut(
        id=row["endpoint_id"],
        url=row["url"],
        description=row["description"],
        consecutive_failures=row["consecutive_failures"],
        disabled_at=row["disabled_at"],
        created_at=row["created_at"],
    )


def _cursor(row: asyncpg.Record) -> str:
    created: datetime = row["created_at"]
    micros = (created - datetime(1970, 1, 1, tzinfo=UTC)) // _MICROSECOND
    return f"{micros}_{row['notification_id'].hex}"


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    micros, hex_id = cursor.split("_")
    try:
        created = datetime(1970, 1, 1, tzinfo=UTC) + int(micros) * _MICROSECOND
    except OverflowError:
        raise Problem(422, "the cursor is not one this service gave") from None
    return created, uuid.UUID(hex_id)
