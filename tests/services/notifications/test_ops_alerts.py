"""Operational alerts (integration): system events on the real topic reach the
inbox of a subscribed admin through the queue and the worker; other event types,
users who did not subscribe, and subscribers who are no longer active admins in
the auth database get nothing."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings
from nexanest.schemas.events import Severity, SystemEvent, encode_event
from nexanest.services.notifications import repository
from nexanest.services.notifications.jobs import Fanout, decode_job
from nexanest.services.notifications.ops_alerts import follow_ops_events, ops_group, route_events
from nexanest.services.notifications.queue import JobQueue
from tests.services.notifications.conftest import (
    AuthAccounts,
    Service,
    auth,
    notification_settings,
    running_service,
)
from tests.services.notifications.test_worker import working

pytestmark = pytest.mark.integration


def event(event_type: str, message: str) -> SystemEvent:
    return SystemEvent(
        event_id=str(uuid.uuid4()),
        ts_ns=time.time_ns(),
        component="consumer.ticks_to_timescale",
        event_type=event_type,
        severity=Severity.WARNING,
        message=message,
        host=socket.gethostname(),
        details={"messages": 250},
    )


async def test_a_routed_event_reaches_each_subscribed_admin_once(
    isolated: Settings, test_id: str, users: list[uuid.UUID], auth_accounts: AuthAccounts
) -> None:
    settings = notification_settings(isolated, test_id, ops_event_types=["dlq_burst", "lag_high"])
    await ensure_topics(settings.kafka)
    admin, user = users
    await auth_accounts.add(admin, "admin")
    async with running_service(settings) as service:
        assert (await service.http.put("/ops-alerts/subscription", headers=auth(admin, "admin"))).status_code == 200
        stop = asyncio.Event()
        follower = asyncio.create_task(follow_ops_events(settings, stop=stop))
        try:
            await _joined(settings.kafka.bootstrap_servers, ops_group(settings), follower)
            producer = make_producer(settings.kafka, client_suffix="ops-test")
            await producer.start()
            try:
                for e in (event("started", "ignored"), event("dlq_burst", "250 dead letters in one batch")):
                    await producer.send_and_wait(settings.kafka.events_topic, encode_event(e))
            finally:
                await producer.stop()
            async with working(settings, service):
                await _inbox_of(service, admin, 1)
        finally:
            stop.set()
            await follower
        [notice] = (await service.http.get("/notifications", headers=auth(admin, "admin"))).json()["items"]
        assert notice["kind"] == "ops_alert"
        assert notice["title"] == "dlq_burst from consumer.ticks_to_timescale"
        assert notice["body"] == "250 dead letters in one batch"
        assert notice["data"]["detail.messages"] == "250"
        assert (await service.http.get("/notifications", headers=auth(user))).json()["items"] == []


async def test_a_subscriber_demoted_or_deactivated_since_gets_no_more_operational_alerts(
    service: Service, users: list[uuid.UUID], auth_accounts: AuthAccounts
) -> None:
    """The role is asked of the auth database when an event is routed, not only
    when the admin subscribed (with an admin token then)."""
    kept, demoted, deactivated, unknown = users[0], users[1], uuid.uuid4(), uuid.uuid4()
    users += [deactivated, unknown]
    mine = set(users)  # the databases are shared with other tests: look at these only
    await auth_accounts.add(kept, "admin")
    await auth_accounts.add(demoted, "admin")
    await auth_accounts.add(deactivated, "admin")
    for user in (kept, demoted, deactivated, unknown):  # each an admin by token when subscribing
        assert (await service.http.put("/ops-alerts/subscription", headers=auth(user, "admin"))).status_code == 200
    auth_db = await asyncpg.connect(service.settings.services.notifications_auth_dsn().get_secret_value())
    try:
        # Before: every subscriber the auth database knows as an active admin.
        assert set(await repository.ops_subscribers(service.pool, auth_db)) & mine == {kept, demoted, deactivated}
        await auth_accounts.set_role(demoted, "user")
        await auth_accounts.as_user(deactivated, "UPDATE users SET is_active = false WHERE user_id = $1")
        assert set(await repository.ops_subscriptions(service.pool)) & mine == mine
        queue = JobQueue(service.queue_redis, service.settings.notifications.key_prefix)
        routed = await route_events(
            [event("dlq_burst", "250 dead letters")], service.pool, auth_db, queue, frozenset({"dlq_burst"})
        )
        # The notifications role reaches nothing else in the auth database.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await auth_db.fetch("SELECT user_id FROM users")
        async with auth_db.transaction():
            await auth_db.fetch("SELECT user_id FROM auth_active_admins($1::uuid[])", [kept])
            assert await auth_db.fetchval("SELECT current_setting('app.admin_check', true)") == ""
    finally:
        await auth_db.close()
    raw = await service.queue_redis.lrange(service.settings.notifications.key_prefix + "queue", 0, -1)
    jobs = [decode_job(r if isinstance(r, bytes) else r.encode()) for r in raw]
    assert routed == len(jobs)
    assert [j.notice.user_id for j in jobs if isinstance(j, Fanout) and j.notice.user_id in mine] == [kept]


async def _joined(bootstrap: str, group: str, follower: asyncio.Task[None], timeout_s: float = 60) -> None:
    """Until the follower's group has committed its starting offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="ops-test-admin")
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not await admin.list_consumer_group_offsets(group):
            assert not follower.done(), follower
            assert time.monotonic() < deadline, "the follower never joined its group"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _inbox_of(service: Service, user: uuid.UUID, n: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while len((await service.http.get("/notifications", headers=auth(user, "admin"))).json()["items"]) < n:
        assert time.monotonic() < deadline, "the operational alert never reached the inbox"
        await asyncio.sleep(0.05)
