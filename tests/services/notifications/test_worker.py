"""The delivery worker against the real database, Redis and a local receiver
(integration): fan-out to the inbox and the webhooks, signatures a receiver can
verify, retries, disabling after failures in a row, and jobs of a dead worker
taken back."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from nexanest.pipeline.settings import Settings
from nexanest.services.notifications.jobs import Fanout, Notice, encode_job
from nexanest.services.notifications.queue import JobQueue
from nexanest.services.notifications.worker import DeliveryWorker, delivery_worker
from tests.services.notifications.conftest import (
    Received,
    Receiver,
    Service,
    auth,
    notification_settings,
    running_service,
)

pytestmark = pytest.mark.integration


def verify(received: Received, secret: str, *, tolerance_s: int = 300) -> None:
    """The receiver's side of Standard Webhooks, written from the specification."""
    msg_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance_s
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{msg_id}.{timestamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [
        part.split(",", 1)[1] for part in received.headers["webhook-signature"].split(" ") if part.startswith("v1,")
    ]
    assert any(hmac.compare_digest(expected, sig) for sig in offered), "no valid v1 signature"


async def wait_for(fact: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await fact():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def working(settings: Settings, service: Service) -> AsyncIterator[DeliveryWorker]:
    async with delivery_worker(settings, service.pool) as worker:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await task


async def webhook(service: Service, user: uuid.UUID, url: str) -> tuple[str, str]:
    created = await service.http.post("/webhooks", json={"url": url}, headers=auth(user))
    assert created.status_code == 201
    return created.json()["id"], created.json()["secret"]


def fanout(user: uuid.UUID, title: str = "AAA crossed above 10") -> Notice:
    return Notice(uuid.uuid4(), user, "alert_fired", title, "AAA traded at 10.5", time.time_ns(), {"price": "10.5"})


async def inbox(service: Service, user: uuid.UUID) -> list[dict[str, object]]:
    items: list[dict[str, object]] = (await service.http.get("/notifications", headers=auth(user))).json()["items"]
    return items


async def test_a_notice_reaches_the_inbox_and_every_enabled_webhook_signed(
    service: Service, users: list[uuid.UUID], receiver: Receiver
) -> None:
    alice, _ = users
    _, secret_a = await webhook(service, alice, receiver.url + "/a")
    _, secret_b = await webhook(service, alice, receiver.url + "/b")
    notice = fanout(alice)
    queue = JobQueue(service.queue_redis, service.settings.notifications.key_prefix)
    await queue.push(encode_job(Fanout(notice)))
    async with working(service.settings, service):
        await wait_for(lambda: _count(receiver, 2), "two webhook deliveries")
        await wait_for(lambda: _inbox_has(service, alice, 1), "the inbox row")
    assert len(receiver.received) == 2
    for received in receiver.received:
        assert received.headers["webhook-id"] == f"msg_{notice.notification_id.hex}"
        assert received.headers["content-type"] == "application/json"
        body = json.loads(received.body)
        assert body["type"] == "alert.fired"
        assert body["data"]["notification_id"] == str(notice.notification_id)
        assert body["data"]["price"] == "10.5"
    # Each endpoint's delivery verifies with its own secret, and not with the other's.
    verified = 0
    for received in receiver.received:
        for secret in (secret_a, secret_b):
            with contextlib.suppress(AssertionError):
                verify(received, secret)
                verified += 1
    assert verified == 2
    [row] = await inbox(service, alice)
    assert row["id"] == str(notice.notification_id)
    assert row["title"] == notice.title
    assert row["data"] == {"price": "10.5"}
    depth = await queue.depth()
    assert (depth.ready, depth.processing, depth.delayed) == (0, 0, 0)


async def test_a_failing_endpoint_is_retried_then_disabled_with_a_notice(
    isolated: Settings, test_id: str, users: list[uuid.UUID], receiver: Receiver
) -> None:
    settings = notification_settings(
        isolated, test_id, webhook_max_attempts=3, webhook_disable_after_failures=4, retry_initial_s=0.05
    )
    alice, _ = users
    receiver.status = 500
    async with running_service(settings) as service:
        hook_id, _ = await webhook(service, alice, receiver.url)
        queue = JobQueue(service.queue_redis, settings.notifications.key_prefix)
        first, second = fanout(alice, "first"), fanout(alice, "second")
        await queue.push(encode_job(Fanout(first)))
        async with working(settings, service):
            await wait_for(lambda: _count(receiver, 3), "three attempts of the first")
            await wait_for(lambda: _delivery_status(service, alice, hook_id, "failed"), "the first given up")
            await queue.push(encode_job(Fanout(second)))
            await wait_for(lambda: _count(receiver, 4), "the fourth failure in a row")
            await wait_for(lambda: _inbox_has(service, alice, 3), "the disabling notice")
            await asyncio.sleep(0.5)  # a retry the disabled endpoint must not get
        assert len(receiver.received) == 4
        [hook] = (await service.http.get("/webhooks", headers=auth(alice))).json()
        assert hook["disabled_at"] is not None
        assert hook["consecutive_failures"] == 4
        deliveries = (await service.http.get(f"/webhooks/{hook_id}/deliveries", headers=auth(alice))).json()
        statuses = {d["notification_id"]: (d["status"], d["attempts"], d["last_status_code"]) for d in deliveries}
        assert statuses[str(first.notification_id)] == ("failed", 3, 500)
        assert statuses[str(second.notification_id)][0] in ("retrying", "abandoned")
        kinds = [str(n["kind"]) for n in await inbox(service, alice)]
        assert sorted(kinds) == ["alert_fired", "alert_fired", "webhook_disabled"]


async def test_jobs_of_a_dead_worker_are_taken_back(
    service: Service, users: list[uuid.UUID], receiver: Receiver
) -> None:
    alice, _ = users
    await webhook(service, alice, receiver.url)
    prefix = service.settings.notifications.key_prefix
    dead = JobQueue(service.queue_redis, prefix, worker_id="dead")
    notice = fanout(alice)
    await dead.push(encode_job(Fanout(notice)))
    assert await dead.take(1) is not None  # taken, never acknowledged; no heartbeat
    assert (await dead.depth()).processing == 1
    async with working(service.settings, service):
        await wait_for(lambda: _count(receiver, 1), "the webhook delivery")
        await wait_for(lambda: _inbox_has(service, alice, 1), "the inbox row")
    assert (await dead.depth()).processing == 0


async def test_a_deleted_alert_or_endpoint_does_not_hold_up_the_queue(
    service: Service, users: list[uuid.UUID], receiver: Receiver
) -> None:
    alice, _ = users
    hook_id, _ = await webhook(service, alice, receiver.url)
    alert = await service.alert(alice, symbol="AAA", kind="crosses_above", threshold="10")
    notice = Notice(
        uuid.uuid4(), alice, "alert_fired", "AAA crossed above 10", "", time.time_ns(), alert_id=uuid.UUID(alert["id"])
    )
    queue = JobQueue(service.queue_redis, service.settings.notifications.key_prefix)
    # The fan-out happens while the endpoint exists; then both go before delivery.
    async with delivery_worker(service.settings, service.pool) as worker:
        await queue.push(encode_job(Fanout(notice)))
        taken = await worker._queue.take(1)
        assert taken is not None
        await worker.handle(taken)  # the fan-out: two deliveries queued
    assert (await service.http.delete(f"/alerts/{alert['id']}", headers=auth(alice))).status_code == 204
    assert (await service.http.delete(f"/webhooks/{hook_id}", headers=auth(alice))).status_code == 204
    async with working(service.settings, service):
        await wait_for(lambda: _inbox_has(service, alice, 1), "the inbox row")

        async def drained() -> bool:
            depth = await queue.depth()
            return (depth.ready, depth.processing, depth.delayed) == (0, 0, 0)

        await wait_for(drained, "the queue drained")
    [row] = await inbox(service, alice)
    assert row["id"] == str(notice.notification_id)
    assert row["alert_id"] is None
    assert receiver.received == []


async def _count(receiver: Receiver, n: int) -> bool:
    return len(receiver.received) >= n


async def _inbox_has(service: Service, user: uuid.UUID, n: int) -> bool:
    return len(await inbox(service, user)) >= n


async def _delivery_status(service: Service, user: uuid.UUID, hook_id: str, status: str) -> bool:
    rows = (await service.http.get(f"/webhooks/{hook_id}/deliveries", headers=auth(user))).json()
    return any(r["status"] == status for r in rows)
