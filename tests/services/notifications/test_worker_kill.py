"""Issue 12: "nothing is lost when the delivery worker is killed mid-queue (a test
does ``kill -9`` and counts)" (integration, faults; about 15 s).

    .venv/bin/pytest -p no:cacheprovider tests/services/notifications/test_worker_kill.py

A user has a webhook endpoint at a receiver on loopback; the test queues
``NOTICES`` notices for her (fan-out jobs, as the evaluator queues them), each of
which becomes an inbox delivery and a webhook delivery. The worker is the real
``nexanest serve notifications-worker``, a process of its own. The receiver
answers the first ``ANSWERED`` webhook requests and holds the rest, so the test
knows when the worker is mid-queue rather than guessing it: once every one of
the worker's concurrent deliveries waits on a held request, part of the queue is
done (inbox rows written, webhooks answered), its ``WORKER_CONCURRENCY`` jobs in
hand are delivered but unacknowledged, and hundreds are still queued. The worker
is then killed with SIGKILL; a new one takes the dead one's processing list back
once its heartbeat has expired and works through the rest.

Counted at the end: exactly ``NOTICES`` inbox rows, the queued ones; exactly
``NOTICES`` distinct ``webhook-id``s at the receiver, every request verified with
the specification's algorithm (``conftest.verify_standard_webhook``, not the
sender's code), the ids in flight at the kill delivered again (at least once),
no other id twice; every delivery recorded ``delivered``; the queue, the
processing lists and the retry set empty.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from nexanest.pipeline.settings import Settings
from nexanest.services.notifications.jobs import Fanout, Notice, encode_job
from nexanest.services.notifications.queue import JobQueue
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

pytestmark = [pytest.mark.integration, pytest.mark.faults]

#: Notices queued: each is one inbox and one webhook delivery.
NOTICES = 300
#: Webhook requests the receiver answers before it holds the rest.
ANSWERED = 100
#: Deliveries the worker makes at once (``NEXANEST_NOTIFICATIONS__WORKER_CONCURRENCY``).
WORKER_CONCURRENCY = 4


async def until(fact: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not await fact():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.05)


async def test_nothing_is_lost_when_the_worker_is_killed_mid_queue(
    migrated: Settings,
    isolated: Settings,
    test_id: str,
    users: list[uuid.UUID],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    settings = notification_settings(isolated, test_id, worker_heartbeat_s=0.5)
    alice, _ = users
    env = {**worker_env(settings), "NEXANEST_NOTIFICATIONS__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY)}
    # The owner's connection counts rows without row-level security getting in the way.
    owner = await asyncpg.connect(migrated.postgres.notifications_dsn.get_secret_value())
    workers: list[asyncio.subprocess.Process] = []

    async def inbox_rows() -> int:
        n: int = await owner.fetchval("SELECT count(*) FROM notifications WHERE user_id = $1", alice)
        return n

    try:
        async with running_service(settings) as service:
            created = await service.http.post("/webhooks", json={"url": receiver.url}, headers=auth(alice))
            assert created.status_code == 201, created.text
            secret = created.json()["secret"]
            notices = [
                Notice(
                    uuid.uuid4(),
                    alice,
                    "message",
                    f"notice {i}",
                    f"the {i}-th of {NOTICES}",
                    time.time_ns(),
                    {"n": str(i)},
                )
                for i in range(NOTICES)
            ]
            queue = JobQueue(service.queue_redis, settings.notifications.key_prefix)
            await queue.push(*(encode_job(Fanout(n)) for n in notices))
            receiver.hold, receiver.hold_from = asyncio.Event(), ANSWERED

            workers.append(await start_cli(["serve", "notifications-worker"], env, tmp_path / "worker-1.log"))

            async def every_delivery_in_hand_held() -> bool:
                assert workers[0].returncode is None, (tmp_path / "worker-1.log").read_text()[-3000:]
                return len(receiver.received) >= ANSWERED + WORKER_CONCURRENCY

            await until(every_delivery_in_hand_held, "every concurrent delivery of the worker held at the receiver")
            workers[0].kill()
            await workers[0].wait()
            assert workers[0].returncode == -signal.SIGKILL
            at_kill = len(receiver.received)
            in_flight = {r.headers["webhook-id"] for r in receiver.received[ANSWERED:at_kill]}
            # Mid-queue: part done, part in the dead worker's hands, most still queued.
            depth, written = await queue.depth(), await inbox_rows()
            assert 0 < written < NOTICES, written
            assert depth.processing >= 1, depth
            assert depth.ready > NOTICES // 2, depth
            in_hand = depth.processing
            held, receiver.hold = receiver.hold, None
            held.set()  # the held requests' connections went with the worker

            workers.append(await start_cli(["serve", "notifications-worker"], env, tmp_path / "worker-2.log"))

            async def all_done() -> bool:
                assert workers[1].returncode is None, (tmp_path / "worker-2.log").read_text()[-3000:]
                ids = {r.headers["webhook-id"] for r in receiver.received}
                depth = await queue.depth()
                return (
                    len(ids) >= NOTICES
                    and await inbox_rows() >= NOTICES
                    and (depth.ready, depth.processing, depth.delayed) == (0, 0, 0)
                )

            await until(all_done, f"{NOTICES} inbox rows, {NOTICES} webhook ids and an empty queue")
            await interrupt(workers[1])
            assert workers[1].returncode == 0, (tmp_path / "worker-2.log").read_text()[-3000:]
            depth = await queue.depth()
            inbox = await owner.fetch("SELECT notification_id, title FROM notifications WHERE user_id = $1", alice)
            deliveries = await owner.fetch(
                "SELECT channel, status, count(*) AS n FROM deliveries WHERE user_id = $1 GROUP BY 1, 2", alice
            )
    finally:
        for worker in workers:
            await interrupt(worker)
        await owner.close()

    queued = {n.notification_id: n for n in notices}
    assert len(inbox) == NOTICES
    assert {r["notification_id"] for r in inbox} == set(queued)
    assert all(r["title"] == queued[r["notification_id"]].title for r in inbox)

    ids = [verify_standard_webhook(r, secret) for r in receiver.received]
    assert len(set(ids)) == NOTICES
    assert set(ids) == {f"msg_{n.hex}" for n in queued}
    repeated = {i for i, count in Counter(ids).items() if count > 1}
    assert in_flight <= repeated, "a delivery in flight at the kill was not delivered again"
    assert repeated <= in_flight, "an id answered before the kill was delivered again"
    for r in receiver.received:
        body = json.loads(r.body)
        notice = queued[uuid.UUID(body["data"]["notification_id"])]
        assert r.headers["webhook-id"] == f"msg_{notice.notification_id.hex}"
        assert body["data"]["n"] == notice.data["n"]

    assert {(r["channel"], r["status"]): r["n"] for r in deliveries} == {
        ("inbox", "delivered"): NOTICES,
        ("webhook", "delivered"): NOTICES,
    }
    assert (depth.ready, depth.processing, depth.delayed) == (0, 0, 0)
    events = [json.loads(line) for line in (tmp_path / "worker-2.log").read_text().splitlines() if line.startswith("{")]
    reclaimed = sum(e["reclaimed"] for e in events if e.get("event") == "notification_worker_started")
    reclaimed += sum(e["jobs"] for e in events if e.get("event") == "notification_jobs_reclaimed")
    assert reclaimed == in_hand, "the dead worker's jobs in hand were not all taken back"
