"""Row-level security and grants bind the notifications service itself (integration).

Hand-written queries on the service's own pooled connections (role
``nexanest_notifications``), with no acting user and with another user acting,
neither see nor change a user's alerts, inbox, endpoints, deliveries or
subscription. Each test first shows the same query reaching the rows as their
owner, so that a query that could never find anything proves nothing. The
worker's cross-user functions return only what they are for. Every table of the
database is a user table under FORCEd row-level security (read from the catalog).
"""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from nexanest.pipeline.settings import Settings
from nexanest.services.notifications import repository
from nexanest.services.notifications.jobs import Notice
from nexanest.services.rls import acting_as
from tests.services.notifications.conftest import Service, auth
from tests.services.row_security import unguarded_tables

pytestmark = pytest.mark.integration

READS = {
    "price_alerts": "SELECT count(*) FROM price_alerts WHERE user_id = $1",
    "notifications": "SELECT count(*) FROM notifications WHERE user_id = $1",
    "webhook_endpoints": "SELECT count(*) FROM webhook_endpoints WHERE user_id = $1",
    "deliveries": "SELECT count(*) FROM deliveries WHERE user_id = $1",
    "ops_subscriptions": "SELECT count(*) FROM ops_subscriptions WHERE user_id = $1",
}
WRITES = [
    "UPDATE price_alerts SET state = 'fired' WHERE user_id = $1",
    "UPDATE notifications SET read_at = now() WHERE user_id = $1",
    "UPDATE webhook_endpoints SET disabled_at = now() WHERE user_id = $1",
    "DELETE FROM price_alerts WHERE user_id = $1",
    "DELETE FROM webhook_endpoints WHERE user_id = $1",
    "DELETE FROM ops_subscriptions WHERE user_id = $1",
]


async def alices_rows(service: Service, alice: uuid.UUID) -> None:
    await service.alert(alice, symbol="AAA", kind="crosses_above", threshold="1")
    hook = await service.http.post("/webhooks", json={"url": "https://example.com/h"}, headers=auth(alice))
    assert hook.status_code == 201
    assert (await service.http.put("/ops-alerts/subscription", headers=auth(alice, "admin"))).status_code == 200
    notice = Notice(uuid.uuid4(), alice, "message", "hello", "", time.time_ns())
    async with acting_as(service.pool, alice) as conn:
        await repository.insert_notice(conn, notice)
        await repository.record_delivery(
            conn,
            delivery_id=uuid.uuid4(),
            notice=notice,
            channel="webhook",
            endpoint_id=uuid.UUID(hook.json()["id"]),
            webhook_id="msg_x",
            attempts=1,
            status="delivered",
            status_code=200,
            error=None,
        )


async def counts(conn: asyncpg.Connection, user: uuid.UUID) -> dict[str, int]:
    return {table: await conn.fetchval(query, user) for table, query in READS.items()}


async def test_without_acting_as_the_owner_the_service_reaches_nothing(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice, bob = users
    await alices_rows(service, alice)
    async with service.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT set_config('app.user_id', $1, true)", str(alice))
        assert set((await counts(conn, alice)).values()) == {1}
        for statement in WRITES:  # acting as the owner they reach the rows (undone below)
            assert not (await conn.execute(statement, alice)).endswith(" 0"), statement
        await transaction.rollback()

    async with service.pool.acquire() as conn:  # no acting user at all
        assert set((await counts(conn, alice)).values()) == {0}
        for statement in WRITES:
            assert (await conn.execute(statement, alice)).endswith(" 0")
    async with acting_as(service.pool, bob) as conn:
        assert set((await counts(conn, alice)).values()) == {0}
        for statement in WRITES:
            assert (await conn.execute(statement, alice)).endswith(" 0")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # WITH CHECK: no row for another user
            await conn.execute(
                "INSERT INTO notifications (notification_id, user_id, title, body) VALUES ($1, $2, 'x', '')",
                uuid.uuid4(),
                alice,
            )


async def test_the_service_role_may_not_move_rows_to_another_user(service: Service, users: list[uuid.UUID]) -> None:
    alice, bob = users
    await service.alert(alice, symbol="AAA", kind="crosses_above", threshold="1")
    for statement in (
        "UPDATE price_alerts SET user_id = $2 WHERE user_id = $1",
        "UPDATE price_alerts SET symbol = 'ZZZ' WHERE user_id = $1 OR user_id = $2",
        "UPDATE notifications SET title = 'x' WHERE user_id = $1 OR user_id = $2",
        "UPDATE webhook_endpoints SET url = 'https://evil.example' WHERE user_id = $1 OR user_id = $2",
        "UPDATE webhook_endpoints SET secret_sealed = '' WHERE user_id = $1 OR user_id = $2",
        "DELETE FROM notifications WHERE user_id = $1 OR user_id = $2",
        "DELETE FROM deliveries WHERE user_id = $1 OR user_id = $2",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with acting_as(service.pool, alice) as conn:
                await conn.execute(statement, alice, bob)


async def test_the_workers_functions_cross_users_for_their_purpose_only(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice, bob = users
    on = await service.alert(alice, symbol="AAA", kind="crosses_above", threshold="1")
    off = await service.alert(bob, symbol="BBB", kind="crosses_below", threshold="2", enabled=False)
    evaluated = {r["alert_id"]: r for r in await repository.alerts_to_evaluate(service.pool)}
    assert uuid.UUID(on["id"]) in evaluated
    assert uuid.UUID(off["id"]) not in evaluated
    assert set(evaluated[uuid.UUID(on["id"])].keys()) == {
        "alert_id", "user_id", "symbol", "kind", "threshold", "hysteresis", "window_s", "state", "fired_count"
    }  # fmt: skip
    # Nothing else of another user is reachable through them.
    async with service.pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET ROLE nexanest")


async def test_every_table_of_the_database_is_a_user_table_under_forced_rls(migrated: Settings) -> None:
    conn = await asyncpg.connect(migrated.postgres.notifications_dsn.get_secret_value())
    try:
        looked_at, wrong = await unguarded_tables(conn, "nexanest_notifications")
    finally:
        await conn.close()
    assert looked_at >= set(READS)  # the query does find the tables
    assert wrong == []
