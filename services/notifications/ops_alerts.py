"""Operational alerts: system events routed to the admins who asked for them.

The worker follows the ``system_events`` topic in a consumer group of its own
(``<kafka.consumer_group>.notifications-ops``), starting at the end of the topic
the first time (an admin is not sent the past). An event whose type is in
``notifications.ops_event_types`` (``dlq_burst``, ``lag_high``, ``batch_failed``,
``error``) becomes one ``Fanout`` job per subscribed admin
(``notification_ops_subscribers()``; an admin subscribes with ``PUT
/ops-alerts/subscription``), through the same queue and channels as price
alerts. The role is checked again for every batch of events, in the auth
database (``auth_active_admins``, auth/0003, as the notifications role): a
subscriber demoted or deactivated since subscribing gets nothing. Offsets are
committed after the jobs are queued, and each notice's id is derived from the
event's id and the admin: a replayed event is the same notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from nexanest.pipeline.kafka import consumer_options
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.schemas.events import SystemEvent, decode_event
from nexanest.services.notifications import repository
from nexanest.services.notifications.jobs import Fanout, Notice, encode_job, ops_notification_id
from nexanest.services.notifications.queue import JobQueue
from nexanest.services.notifications.worker import notifications_redis
from nexanest.services.resources import postgres_pool

_log = get_logger("nexanest.services.notifications.ops_alerts")
_RETRY_S = 5.0


def ops_group(settings: Settings) -> str:
    return f"{settings.kafka.consumer_group}.notifications-ops"


def notice_of(event: SystemEvent, admin_id: uuid.UUID) -> Notice:
    """The notice of ``event`` for the admin ``admin_id``."""
    data = {
        "event_id": event.event_id,
        "component": event.component,
        "event_type": event.event_type,
        "severity": str(event.severity),
        **{f"detail.{k}": str(v) for k, v in list(event.details.items())[:20]},
    }
    return Notice(
        notification_id=ops_notification_id(event.event_id, admin_id),
        user_id=admin_id,
        kind="ops_alert",
        title=f"{event.event_type} from {event.component}"[:200],
        body=event.message[:2000],
        created_ns=event.ts_ns,
        data=data,
    )


async def route_events(
    events: list[SystemEvent],
    pool: asyncpg.Pool | asyncpg.Connection,
    auth: asyncpg.Pool | asyncpg.Connection,
    queue: JobQueue,
    types: frozenset[str],
) -> int:
    """Queue the notices of ``events`` of the routed types for every subscriber who
    is an active admin now (``auth``: the auth database); how many."""
    wanted = [e for e in events if e.event_type in types]
    if not wanted:
        return 0
    admins = await repository.ops_subscribers(pool, auth)
    jobs = [encode_job(Fanout(notice_of(e, a))) for e in wanted for a in admins]
    await queue.push(*jobs)
    return len(jobs)


async def follow_ops_events(settings: Settings, *, stop: asyncio.Event) -> None:
    """Route system events until ``stop`` is set; outlives Kafka, Redis or database
    trouble (logged, retried)."""
    types = frozenset(settings.notifications.ops_event_types)
    if not types:
        return
    while not stop.is_set():
        try:
            await _follow(settings, types, stop)
        except (KafkaError, OSError, asyncpg.PostgresError) as exc:
            _log.warning("ops_events_interrupted", error=type(exc).__name__, retry_in_s=_RETRY_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _RETRY_S)


async def _follow(settings: Settings, types: frozenset[str], stop: asyncio.Event) -> None:
    options = {**consumer_options(settings.kafka, "notifications-ops"), "auto_offset_reset": "latest"}
    consumer = AIOKafkaConsumer(settings.kafka.events_topic, group_id=ops_group(settings), **options)
    client = notifications_redis(settings)
    try:
        async with (
            postgres_pool("ops-db", settings.services.notifications_dsn, max_size=1).open() as pool,
            postgres_pool("ops-auth-db", settings.services.notifications_auth_dsn(), max_size=1).open() as auth,
        ):
            await consumer.start()
            queue = JobQueue(client, settings.notifications.key_prefix)
            pinned = False
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=1000)
                if not pinned and consumer.assignment():
                    # Commit where the group starts, so that it starts there next time
                    # too (and a test can tell that it follows).
                    await consumer.commit({tp: await consumer.position(tp) for tp in consumer.assignment()})
                    pinned = True
                if not batch:
                    continue
                events, offsets = [], {}
                for tp, messages in batch.items():
                    for m in messages:
                        try:
                            events.append(decode_event(m.value or b""))
                        except (msgspec.DecodeError, msgspec.ValidationError):
                            _log.warning("ops_event_unreadable", partition=tp.partition, offset=m.offset)
                    offsets[TopicPartition(tp.topic, tp.partition)] = messages[-1].offset + 1
                started = time.perf_counter()
                queued = await route_events(events, pool, auth, queue, types)
                await consumer.commit(offsets)
                if queued:
                    _log.info(
                        "ops_alerts_queued",
                        notices=queued,
                        duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    )
    finally:
        await consumer.stop()
        await client.aclose()
