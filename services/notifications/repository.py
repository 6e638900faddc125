"""The notifications database's SQL: parameterised statements through asyncpg.

Every function takes a connection inside ``acting_as`` (``services/rls.py``), so
row-level security limits it to the acting user's rows, except
``alerts_to_evaluate`` and ``ops_subscriptions``, which call the SECURITY DEFINER
functions of notifications/0002 (the worker's only ways across users) on a
pooled connection, and ``ops_subscribers``, which also asks the auth database's
``auth_active_admins`` (auth/0003) which subscribers are still admins.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final

import asyncpg

from nexanest.services.notifications.conditions import Kind, State
from nexanest.services.notifications.jobs import ChannelName, Notice
from nexanest.services.rls import count_under_lock

ALERT_COLUMNS: Final = (
    "alert_id, user_id, symbol, kind, threshold, hysteresis, window_s, enabled, state, fired_count, "
    "last_fired_at, last_fired_price, created_at, updated_at"
)
NOTIFICATION_COLUMNS: Final = "notification_id, kind, title, body, data, alert_id, created_at, read_at"
ENDPOINT_COLUMNS: Final = "endpoint_id, url, description, consecutive_failures, disabled_at, created_at"


class TooMany(Exception):
    """The user has as many of these as allowed."""


# --- alerts -----------------------------------------------------------------------------


async def create_alert(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    *,
    symbol: str,
    kind: Kind,
    threshold: Decimal,
    hysteresis: Decimal,
    window_s: int | None,
    enabled: bool,
    state: State,
    max_per_user: int,
) -> asyncpg.Record:
    """Raises ``TooMany`` when the user has ``max_per_user`` alerts already. The
    count and the insert are serialised per user by an advisory lock of the
    transaction, so parallel creations cannot pass the limit together."""
    if await count_under_lock(conn, "price_alerts", str(user_id), seed=12) >= max_per_user:
        raise TooMany
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO price_alerts (alert_id, user_id, symbol, kind, threshold, hysteresis, window_s, enabled, state)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {ALERT_COLUMNS}""",
        uuid.uuid4(),
        user_id,
        symbol,
        kind,
        threshold,
        hysteresis,
        window_s,
        enabled,
        state,
    )
    return row


async def list_alerts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(f"SELECT {ALERT_COLUMNS} FROM price_alerts ORDER BY created_at, alert_id"))


async def get_alert(conn: asyncpg.Connection, alert_id: uuid.UUID, *, lock: bool = False) -> asyncpg.Record | None:
    suffix = " FOR UPDATE" if lock else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {ALERT_COLUMNS} FROM price_alerts WHERE alert_id = $1{suffix}", alert_id
    )
    return row


async def update_alert(
    conn: asyncpg.Connection,
    alert_id: uuid.UUID,
    *,
    threshold: Decimal,
    hysteresis: Decimal,
    window_s: int | None,
    enabled: bool,
    state: State,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        f"""UPDATE price_alerts
               SET threshold = $2, hysteresis = $3, window_s = $4, enabled = $5, state = $6, updated_at = now()
             WHERE alert_id = $1 RETURNING {ALERT_COLUMNS}""",
        alert_id,
        threshold,
        hysteresis,
        window_s,
        enabled,
        state,
    )
    return row


async def delete_alert(conn: asyncpg.Connection, alert_id: uuid.UUID) -> bool:
    return await conn.fetchval("DELETE FROM price_alerts WHERE alert_id = $1 RETURNING true", alert_id) is not None


async def record_firing(
    conn: asyncpg.Connection, alert_id: uuid.UUID, firing: int, price: Decimal, fired_at: datetime
) -> bool:
    """The alert fired for the ``firing``-th time; False when its stored count was
    not ``firing - 1`` (another evaluator recorded it, or the alert changed)."""
    done = await conn.fetchval(
        """UPDATE price_alerts
              SET state = 'fired', fired_count = $2, last_fired_at = $3, last_fired_price = $4
            WHERE alert_id = $1 AND fired_count = $2 - 1 RETURNING true""",
        alert_id,
        firing,
        fired_at,
        price,
    )
    return done is not None


async def record_rearm(conn: asyncpg.Connection, alert_id: uuid.UUID, fired_count: int) -> bool:
    done = await conn.fetchval(
        "UPDATE price_alerts SET state = 'armed' WHERE alert_id = $1 AND fired_count = $2 RETURNING true",
        alert_id,
        fired_count,
    )
    return done is not None


async def alerts_to_evaluate(pool: asyncpg.Pool | asyncpg.Connection) -> list[asyncpg.Record]:
    """Every enabled alert of every user (the evaluator's index)."""
    return list(
        await pool.fetch(
            "SELECT alert_id, user_id, symbol, kind, threshold, hysteresis, window_s, state, fired_count "
            "FROM notification_alerts_to_evaluate()"
        )
    )


# --- the inbox ----------------------------------------------------------------------------


async def notifications_page(
    conn: asyncpg.Connection, *, unread_only: bool, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[asyncpg.Record]:
    """Newest first, ``limit`` at most, strictly before the keyset ``before``."""
    return list(
        await conn.fetch(
            f"""SELECT {NOTIFICATION_COLUMNS} FROM notifications
                 WHERE ($1::boolean IS false OR read_at IS NULL)
                   AND ($2::timestamptz IS NULL OR (created_at, notification_id) < ($2, $3::uuid))
                 ORDER BY created_at DESC, notification_id DESC LIMIT $4""",
            unread_only,
            before[0] if before else None,
            before[1] if before else None,
            limit,
        )
    )


async def mark_read(conn: asyncpg.Connection, notification_id: uuid.UUID) -> asyncpg.Record | None:
    """Read now, unless read before (the first reading's time stays)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""UPDATE notifications SET read_at = coalesce(read_at, now())
             WHERE notification_id = $1 RETURNING {NOTIFICATION_COLUMNS}""",
        notification_id,
    )
    return row


async def insert_notice(conn: asyncpg.Connection, notice: Notice) -> bool:
    """Into the inbox of the acting user, once: False when it is there already.
    An alert deleted since it fired leaves the notice without its ``alert_id``."""
    done = await conn.fetchval(
        """INSERT INTO notifications (notification_id, user_id, kind, title, body, data, alert_id, created_at)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, (SELECT alert_id FROM price_alerts WHERE alert_id = $7),
                   to_timestamp($8::double precision / 1e9))
           ON CONFLICT (notification_id) DO NOTHING RETURNING true""",
        notice.notification_id,
        notice.user_id,
        notice.kind,
        notice.title,
        notice.body,
        json.dumps(notice.data),
        notice.alert_id,
        notice.created_ns,
    )
    return done is not None


# --- webhook endpoints --------------------------------------------------------------------


async def create_endpoint(
    conn: asyncpg.Connection,
    endpoint_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    url: str,
    description: str,
    secret_sealed: bytes,
    max_per_user: int,
) -> asyncpg.Record:
    if await count_under_lock(conn, "webhook_endpoints", str(user_id), seed=13) >= max_per_user:
        raise TooMany
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO webhook_endpoints (endpoint_id, user_id, url, description, secret_sealed)
            VALUES ($1, $2, $3, $4, $5) RETURNING {ENDPOINT_COLUMNS}""",
        endpoint_id,
        user_id,
        url,
        description,
        secret_sealed,
    )
    return row


async def list_endpoints(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, endpoint_id"))


async def delete_endpoint(conn: asyncpg.Connection, endpoint_id: uuid.UUID) -> bool:
    done = await conn.fetchval("DELETE FROM webhook_endpoints WHERE endpoint_id = $1 RETURNING true", endpoint_id)
    return done is not None


async def enabled_endpoint_ids(conn: asyncpg.Connection) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT endpoint_id FROM webhook_endpoints WHERE disabled_at IS NULL ORDER BY created_at, endpoint_id"
    )
    return [r["endpoint_id"] for r in rows]


async def endpoint_for_delivery(conn: asyncpg.Connection, endpoint_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT url, secret_sealed, disabled_at FROM webhook_endpoints WHERE endpoint_id = $1", endpoint_id
    )
    return row


async def endpoint_succeeded(conn: asyncpg.Connection, endpoint_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE endpoint_id = $1 AND consecutive_failures <> 0",
        endpoint_id,
    )


async def endpoint_failed(conn: asyncpg.Connection, endpoint_id: uuid.UUID, disable_after: int) -> bool:
    """Count a failure in a row; disable the endpoint when it makes ``disable_after``.
    True when this failure disabled it."""
    disabled = await conn.fetchval(
        """UPDATE webhook_endpoints
              SET consecutive_failures = consecutive_failures + 1,
                  disabled_at = CASE WHEN consecutive_failures + 1 >= $2 THEN now() END
            WHERE endpoint_id = $1 AND disabled_at IS NULL
        RETURNING disabled_at IS NOT NULL""",
        endpoint_id,
        disable_after,
    )
    return bool(disabled)


# --- deliveries -----------------------------------------------------------------------------


async def record_delivery(
    conn: asyncpg.Connection,
    *,
    delivery_id: uuid.UUID,
    notice: Notice,
    channel: ChannelName,
    endpoint_id: uuid.UUID | None,
    webhook_id: str | None,
    attempts: int,
    status: str,
    status_code: int | None,
    error: str | None,
) -> None:
    """The delivery's state after an attempt (one row per delivery, rewritten)."""
    await conn.execute(
        """INSERT INTO deliveries (delivery_id, user_id, notification_id, channel, endpoint_id, webhook_id,
                                   attempts, status, last_status_code, last_error, delivered_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $8 = 'delivered' THEN now() END)
           ON CONFLICT (delivery_id) DO UPDATE
              SET attempts = greatest(deliveries.attempts, EXCLUDED.attempts), status = EXCLUDED.status,
                  last_status_code = EXCLUDED.last_status_code, last_error = EXCLUDED.last_error,
                  updated_at = now(), delivered_at = coalesce(deliveries.delivered_at, EXCLUDED.delivered_at)""",
        delivery_id,
        notice.user_id,
        notice.notification_id,
        channel,
        endpoint_id,
        webhook_id,
        attempts,
        status,
        status_code,
        None if error is None else error[:200],
    )


async def endpoint_deliveries(
    conn: asyncpg.Connection, endpoint_id: uuid.UUID, limit: int
) -> list[asyncpg.Record] | None:
    """Newest first; None when the acting user has no such endpoint."""
    if await conn.fetchval("SELECT true FROM webhook_endpoints WHERE endpoint_id = $1", endpoint_id) is None:
        return None
    return list(
        await conn.fetch(
            """SELECT delivery_id, notification_id, webhook_id, attempts, status, last_status_code, last_error,
                      created_at, updated_at, delivered_at
                 FROM deliveries WHERE endpoint_id = $1 ORDER BY created_at DESC, delivery_id DESC LIMIT $2""",
            endpoint_id,
            limit,
        )
    )


# --- operational alerts ---------------------------------------------------------------------


async def subscribe_ops(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    await conn.execute("INSERT INTO ops_subscriptions (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)


async def unsubscribe_ops(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("DELETE FROM ops_subscriptions RETURNING true") is not None


async def ops_subscribed(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ops_subscriptions)"))


async def ops_subscriptions(pool: asyncpg.Pool | asyncpg.Connection) -> list[uuid.UUID]:
    """Every user subscribed to operational alerts (admins when they subscribed)."""
    return [r["user_id"] for r in await pool.fetch("SELECT user_id FROM notification_ops_subscribers()")]


async def ops_subscribers(
    pool: asyncpg.Pool | asyncpg.Connection, auth: asyncpg.Pool | asyncpg.Connection
) -> list[uuid.UUID]:
    """The subscribed users who are active admins now, asked of the auth database
    (``auth``: the notifications role there, ``auth_active_admins``, auth/0003) at
    each call: a subscriber demoted or deactivated since subscribing gets nothing."""
    subscribed = await ops_subscriptions(pool)
    if not subscribed:
        return []
    admins = {r["user_id"] for r in await auth.fetch("SELECT user_id FROM auth_active_admins($1::uuid[])", subscribed)}
    return [s for s in subscribed if s in admins]


def data_of(value: object) -> Mapping[str, str]:
    """An inbox row's ``data`` (asyncpg hands JSONB over as text)."""
    decoded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(decoded, dict):
        return {}
    return {str(k): str(v) for k, v in decoded.items()}
