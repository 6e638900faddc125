"""The delivery worker: takes jobs off the queue and delivers them through the channels.

``nexanest serve notifications-worker`` runs it alone; the service runs one too
unless ``NEXANEST_NOTIFICATIONS__WORKER_IN_SERVICE=false``. Several may run at
once: each takes jobs into a processing list of its own (``queue.py``).

- A ``Fanout`` job becomes one ``Delivery`` per channel (the inbox, every enabled
  webhook endpoint of the user), queued in the same ``MULTI`` that acknowledges it.
- A ``Delivery`` goes through its channel (``channels.py``). Delivered or
  abandoned: acknowledged. Failed: retried after an exponential, jittered delay
  (``pipeline/retry.py``, from ``retry_initial_s`` up to ``retry_max_s``), until
  ``webhook_max_attempts`` attempts; the retry is scheduled in the same ``MULTI``
  that acknowledges the attempt. Each attempt's outcome is recorded in
  ``deliveries`` (as the job's user).

A worker killed at any point leaves its jobs in its processing list, which the
next worker puts back on the queue once this one's heartbeat has expired: each
job is done at least once, and doing one twice yields the same inbox row and the
same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import asyncpg
import httpx
import msgspec
import redis.asyncio as redis

from nexanest.pipeline import metrics
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import NotificationsSettings, RetrySettings, Settings
from nexanest.services.app import Resource
from nexanest.services.background import logging_failure
from nexanest.services.notifications import repository
from nexanest.services.notifications.channels import Channel, InboxChannel, Outcome, WebhookChannel
from nexanest.services.notifications.jobs import (
    ChannelName,
    Delivery,
    Fanout,
    decode_job,
    delivery_id,
    encode_job,
    webhook_id,
)
from nexanest.services.notifications.queue import JobQueue
from nexanest.services.notifications.sealing import SecretBox
from nexanest.services.resources import postgres_pool
from nexanest.services.rls import acting_as

_log = get_logger("nexanest.services.notifications.worker")
#: How long one take waits for a job before the worker looks at its stop event again.
_TAKE_TIMEOUT_S = 1
#: A job whose handling raised (the database or Redis away) is tried again this much later.
_TROUBLE_DELAY_S = 5.0


class DeliveryWorker:
    """Handles jobs of ``queue`` with ``channels`` (by channel name)."""

    def __init__(
        self,
        queue: JobQueue,
        pool: asyncpg.Pool,
        channels: Mapping[ChannelName, Channel],
        settings: NotificationsSettings,
    ) -> None:
        self._queue = queue
        self._pool = pool
        self._channels = channels
        self._settings = settings
        self._retry = RetrySettings(initial_backoff_s=settings.retry_initial_s, max_backoff_s=settings.retry_max_s)

    def retry_delay_s(self, attempts: int) -> float:
        """The jittered delay before the attempt after ``attempts`` failed ones."""
        backoff = Backoff(self._retry)
        delay = 0.0
        for _ in range(max(1, attempts)):
            delay = backoff.next_delay()
        return delay

    async def handle(self, raw: bytes) -> None:
        """Do one job taken off the queue, and acknowledge it (or schedule its retry)."""
        try:
            job = decode_job(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            _log.error("notification_job_unreadable", bytes=len(raw))
            await self._queue.ack(raw)
            return
        if isinstance(job, Fanout):
            await self._fan_out(raw, job)
        else:
            await self._deliver(raw, job)

    async def _fan_out(self, raw: bytes, job: Fanout) -> None:
        notice = job.notice
        async with acting_as(self._pool, notice.user_id) as conn:
            endpoints = await repository.enabled_endpoint_ids(conn)
        deliveries = [Delivery(delivery_id(notice.notification_id, "inbox", None), notice, "inbox")]
        deliveries += [
            Delivery(delivery_id(notice.notification_id, "webhook", e), notice, "webhook", endpoint_id=e)
            for e in endpoints
        ]
        await self._queue.ack(raw, *(encode_job(d) for d in deliveries))

    async def _deliver(self, raw: bytes, job: Delivery) -> None:
        channel = self._channels.get(job.channel)
        if channel is None:
            outcome = Outcome("abandoned", error="no such channel")
        else:
            try:
                outcome = await channel.deliver(job)
            except Exception as exc:  # noqa: BLE001 - a store's trouble is a failed attempt; the next may succeed
                _log.warning("delivery_attempt_raised", channel=job.channel, error=type(exc).__name__)
                outcome = Outcome("failed", error=type(exc).__name__)
        attempts = job.attempt + 1
        final = outcome.kind != "failed" or attempts >= self._settings.webhook_max_attempts
        status = {"delivered": "delivered", "abandoned": "abandoned"}.get(
            outcome.kind, "failed" if final else "retrying"
        )
        # An endpoint deleted meanwhile took its delivery records with it: nothing to record.
        with contextlib.suppress(asyncpg.ForeignKeyViolationError):
            await self._record(job, attempts, status, outcome)
        metrics.NOTIFICATIONS_DELIVERIES.labels(job.channel, "retry" if status == "retrying" else status).inc()
        if final:
            if status == "failed":
                _log.warning("delivery_given_up", channel=job.channel, attempts=attempts, error=outcome.error)
            await self._queue.ack(raw)
            return
        retry = msgspec.structs.replace(job, attempt=attempts)
        await self._queue.retry_at(raw, encode_job(retry), time.time() + self.retry_delay_s(attempts))

    async def _record(self, job: Delivery, attempts: int, status: str, outcome: Outcome) -> None:
        async with acting_as(self._pool, job.notice.user_id) as conn:
            await repository.record_delivery(
                conn,
                delivery_id=job.delivery_id,
                notice=job.notice,
                channel=job.channel,
                endpoint_id=job.endpoint_id,
                webhook_id=webhook_id(job.notice.notification_id) if job.channel == "webhook" else None,
                attempts=attempts,
                status=status,
                status_code=outcome.status_code,
                error=outcome.error,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; jobs in hand are finished first. Raises when
        Redis cannot be reached at start."""
        heartbeat_s = self._settings.worker_heartbeat_s
        await self._queue.beat(3 * heartbeat_s)
        reclaimed = await self._queue.reclaim()
        metrics.NOTIFICATIONS_JOBS_RECLAIMED.inc(reclaimed)
        _log.info(
            "notification_worker_started",
            worker=self._queue.worker_id,
            concurrency=self._settings.worker_concurrency,
            reclaimed=reclaimed,
        )
        takers = [
            asyncio.create_task(self._take(stop), name=f"notification-taker-{n}")
            for n in range(self._settings.worker_concurrency)
        ]
        try:
            await self._housekeeping(stop)
            await asyncio.gather(*takers)
        finally:
            for task in takers:
                task.cancel()
            for task in takers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                await self._queue.stop_beating()
            _log.info("notification_worker_stopped", worker=self._queue.worker_id)

    async def _take(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                raw = await self._queue.take(_TAKE_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - Redis away: wait and take again
                _log.warning("notification_take_failed", error=type(exc).__name__)
                await _sleep_unless(stop, _TROUBLE_DELAY_S)
                continue
            if raw is None:
                continue
            try:
                await self.handle(raw)
            except Exception as exc:  # noqa: BLE001 - the job stays in hand; try it again later
                _log.warning("notification_job_failed", error=type(exc).__name__)
                with contextlib.suppress(Exception):
                    await self._queue.retry_at(raw, raw, time.time() + _TROUBLE_DELAY_S)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Heartbeat, due retries onto the queue, dead workers' jobs back, depth gauges."""
        heartbeat_s = self._settings.worker_heartbeat_s
        next_beat = time.monotonic() + heartbeat_s
        while not await _sleep_unless(stop, min(1.0, heartbeat_s)):
            try:
                await self._queue.promote_due(time.time())
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + heartbeat_s
                    await self._queue.beat(3 * heartbeat_s)
                    moved = await self._queue.reclaim()
                    if moved:
                        metrics.NOTIFICATIONS_JOBS_RECLAIMED.inc(moved)
                        _log.info("notification_jobs_reclaimed", jobs=moved)
                depth = await self._queue.depth()
                metrics.NOTIFICATIONS_QUEUE_DEPTH.labels("ready").set(depth.ready)
                metrics.NOTIFICATIONS_QUEUE_DEPTH.labels("processing").set(depth.processing)
                metrics.NOTIFICATIONS_QUEUE_DEPTH.labels("delayed").set(depth.delayed)
            except Exception as exc:  # noqa: BLE001 - Redis away: the next round tries again
                _log.warning("notification_housekeeping_failed", error=type(exc).__name__)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop``; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def notifications_redis(settings: Settings) -> redis.Redis:
    """A client on ``redis.db_notifications`` whose socket outlasts a blocking take."""
    timeout = max(settings.redis.socket_timeout_s, _TAKE_TIMEOUT_S + 4)
    return redis.Redis.from_url(
        settings.redis.url.get_secret_value(),
        db=settings.redis.db_notifications,
        socket_timeout=timeout,
        socket_connect_timeout=settings.redis.socket_timeout_s,
    )


@asynccontextmanager
async def delivery_worker(settings: Settings, pool: asyncpg.Pool | None = None) -> AsyncIterator[DeliveryWorker]:
    """A worker with its own Redis client and HTTP client (and pool, unless given),
    closed when the block ends."""
    n = settings.notifications
    box = SecretBox.from_settings(settings)
    client = notifications_redis(settings)
    http = httpx.AsyncClient(timeout=n.webhook_timeout_s, follow_redirects=False, headers={"user-agent": "nexanest"})
    try:
        async with contextlib.AsyncExitStack() as stack:
            if pool is None:
                dsn = settings.services.notifications_dsn
                pool = await stack.enter_async_context(postgres_pool("worker-db", dsn, max_size=4).open())
            channels: dict[ChannelName, Channel] = {
                "inbox": InboxChannel(pool),
                "webhook": WebhookChannel(
                    pool,
                    http,
                    box,
                    disable_after=n.webhook_disable_after_failures,
                    allow_private=n.webhook_allow_private,
                ),
            }
            queue = JobQueue(client, n.key_prefix)  # a fresh worker id: its own processing list
            yield DeliveryWorker(queue, pool, channels, n)
    finally:
        await http.aclose()
        await client.aclose()


async def run_worker(settings: Settings, *, stop: asyncio.Event) -> None:
    """``nexanest serve notifications-worker``: the worker (and the operational
    alerts follower) until ``stop`` is set."""
    from nexanest.services.notifications.ops_alerts import follow_ops_events

    async with delivery_worker(settings) as worker:
        ops = asyncio.create_task(follow_ops_events(settings, stop=stop), name="notification-ops-events")
        try:
            await worker.run(stop)
        finally:
            ops.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ops


def worker_resource(settings: Settings, *, name: str = "delivery-worker") -> Resource[asyncio.Task[None]]:
    """The worker inside the service, as a resource: started with the app (with a
    pool of its own, so that deliveries never wait behind requests), stopped with
    it (jobs in hand finished first); ``/readyz`` checks that it still runs."""

    @asynccontextmanager
    async def open_worker() -> AsyncIterator[asyncio.Task[None]]:
        stop = asyncio.Event()
        work = logging_failure(run_worker(settings, stop=stop), log=_log)
        task = asyncio.create_task(work, name="notification-worker")
        try:
            yield task
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 30)

    async def running(task: asyncio.Task[None]) -> None:
        if task.done():
            raise RuntimeError("the delivery worker has stopped")

    return Resource(name, open_worker, running)
