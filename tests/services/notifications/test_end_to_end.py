"""Issue 12's done-when, through the real pipeline (integration; about 15 s).

    .venv/bin/pytest -p no:cacheprovider tests/services/notifications/test_end_to_end.py

A user sets an alert (crosses above 100, hysteresis 1) and a webhook endpoint at
a receiver on loopback. Ticks whose prices the test chooses go through Kafka to
the real consumer (``nexanest consume``, a process of its own), whose quote
script publishes each quote; the service's evaluator (in process) follows them.
The delivery worker is ``nexanest serve notifications-worker``, another process.

The price crosses the threshold, hovers (never below 99: no re-arm, no second
firing), falls back below 99, and crosses again. The receiver holds the first
webhook request, and the worker is killed with SIGKILL while it waits for the
answer: the delivery is in its processing list, not acknowledged. The second
crossing happens while no worker runs. A new worker takes the dead one's list
back and delivers everything.

Exactly two notifications reach the inbox, and the receiver sees exactly two
distinct ``webhook-id``s, every request carrying a signature the test verifies
with the specification's algorithm written here (not the sender's code); the
first id arrives more than once (the kill), always with the same id.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as redis

from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings
from nexanest.schemas.ticks import Tick, encode_tick
from tests.processes import interrupt
from tests.services.notifications.conftest import (
    Receiver,
    auth,
    notification_settings,
    running_service,
    start_cli,
    verify_standard_webhook,
    worker_env,
)

pytestmark = pytest.mark.integration


async def test_two_crossings_two_notifications_two_signed_webhooks_across_a_kill_9(
    isolated: Settings, test_id: str, users: list[uuid.UUID], receiver: Receiver, tmp_path: Path
) -> None:
    settings = notification_settings(isolated, test_id, evaluator_in_service=True, worker_heartbeat_s=0.5)
    alice, _ = users
    symbol = f"NT{test_id.upper()}"
    await ensure_topics(settings.kafka)
    env = worker_env(settings)
    consumer = await start_cli(["consume"], env, tmp_path / "consumer.log")
    producer = make_producer(settings.kafka, client_suffix="notifications-test")
    await producer.start()
    quotes = redis.Redis.from_url(settings.redis.url.get_secret_value(), db=settings.redis.db_quotes)
    seq = 0
    workers: list[asyncio.subprocess.Process] = []

    async def tick(price: str) -> None:
        """Publish a tick at ``price`` and wait until its quote is in Redis (so its
        update was published: each price is seen, whatever the consumer batches)."""
        nonlocal seq
        seq += 1
        ts_ns = time.time_ns()
        price_e9 = int(Decimal(price) * 10**9)
        tick = Tick(
            symbol=symbol,
            exchange="XTST",
            price_e9=price_e9,
            size_e9=10**9,
            ts_ns=ts_ns,
            source=f"nt-{test_id}",
            seq=seq,
        )
        await producer.send_and_wait(settings.kafka.ticks_topic, encode_tick(tick), key=symbol.encode())
        deadline = time.monotonic() + 60
        while await quotes.hget(settings.redis.quote_key_prefix + symbol, "ts_ns") != str(ts_ns).encode():
            assert consumer.returncode is None, (tmp_path / "consumer.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the tick's quote never reached Redis"
            await asyncio.sleep(0.02)

    async def until(fact: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not await fact():
            assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
            await asyncio.sleep(0.05)

    try:
        async with running_service(settings) as service:
            hook = (await service.http.post("/webhooks", json={"url": receiver.url}, headers=auth(alice))).json()
            secret = hook["secret"]
            await tick("98")  # a quote before the alert: it starts armed (below the line)
            alert = await service.alert(alice, symbol=symbol, kind="crosses_above", threshold="100", hysteresis="1")
            assert alert["state"] == "armed"
            running = service.resources["alert-evaluator"]

            async def indexed() -> bool:
                return running.evaluator is not None and running.evaluator.index.get(uuid.UUID(alert["id"])) is not None

            await until(indexed, "the alert in the evaluator's index")

            receiver.hold = asyncio.Event()
            workers.append(await start_cli(["serve", "notifications-worker"], env, tmp_path / "worker-1.log"))
            await tick("99.5")
            await tick("100.5")  # crossing 1
            await until(lambda: _arrived(receiver), "the first webhook request (held)")
            workers[0].kill()  # SIGKILL while it waits for the receiver's answer
            await workers[0].wait()
            assert workers[0].returncode == -signal.SIGKILL
            held = receiver.hold
            receiver.hold = None
            held.set()  # the held request's connection is gone with the worker

            for price in ("99.5", "100.2", "99.01", "100.8"):  # hovering: no re-arm, no firing
                await tick(price)
            await tick("98.9")  # below 100 - 1: re-armed
            await tick("101")  # crossing 2, while no worker runs

            async def fired_twice() -> bool:
                got = (await service.http.get(f"/alerts/{alert['id']}", headers=auth(alice))).json()
                return bool(got["fired_count"] == 2)

            await until(fired_twice, "the second firing stored")
            workers.append(await start_cli(["serve", "notifications-worker"], env, tmp_path / "worker-2.log"))

            async def all_delivered() -> bool:
                items = (await service.http.get("/notifications", headers=auth(alice))).json()["items"]
                rows = (await service.http.get(f"/webhooks/{hook['id']}/deliveries", headers=auth(alice))).json()
                return len(items) >= 2 and sum(r["status"] == "delivered" for r in rows) >= 2

            await until(all_delivered, "both notices in the inbox and at the receiver")
            # Nothing more arrives: the queue is empty and nothing waits to be retried.
            depth_keys = [settings.notifications.key_prefix + k for k in ("queue", "delayed")]
            client = service.queue_redis
            assert await client.llen(depth_keys[0]) == 0
            assert await client.zcard(depth_keys[1]) == 0

            inbox = (await service.http.get("/notifications", headers=auth(alice))).json()["items"]
            final = (await service.http.get(f"/alerts/{alert['id']}", headers=auth(alice))).json()
    finally:
        for worker in workers:
            await interrupt(worker)
        await interrupt(consumer)
        await producer.stop()
        await quotes.aclose()

    assert len(inbox) == 2, inbox
    assert {n["kind"] for n in inbox} == {"alert_fired"}
    assert sorted(n["data"]["price"] for n in inbox) == ["100.5", "101"]
    assert all(n["alert_id"] == alert["id"] for n in inbox)
    assert (final["fired_count"], final["state"]) == (2, "fired")

    ids = [verify_standard_webhook(r, secret) for r in receiver.received]
    assert len(set(ids)) == 2, ids
    expected = {f"msg_{uuid.UUID(n['id']).hex}" for n in inbox}
    assert set(ids) == expected
    first_id = ids[0]
    assert ids.count(first_id) >= 2, "the killed worker's delivery was not delivered again"
    bodies = {r.headers["webhook-id"]: json.loads(r.body) for r in receiver.received}
    assert sorted(b["data"]["price"] for b in bodies.values()) == ["100.5", "101"]
    reclaimed = [json.loads(line) for line in (tmp_path / "worker-2.log").read_text().splitlines() if "reclaim" in line]
    assert sum(int(e.get("reclaimed", e.get("jobs", 0))) for e in reclaimed) >= 1, "nothing was taken back"


async def _arrived(receiver: Receiver) -> bool:
    return receiver.arrived.is_set()
