"""The alert evaluator on real Redis pub/sub and the notifications database
(integration). Quote updates are published on the channels and in the format of
the consumer's quote script; each step waits for a fact (a job on the queue, a
stored state). "Nothing fired" is proven by a sentinel: an alert of another
symbol that does fire, published after, and delivered in publish order on the
evaluator's one connection."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.redis_quotes import quote_channel
from nexanest.services.notifications.evaluator import Running, run_evaluator
from nexanest.services.notifications.jobs import Fanout, alert_notification_id, decode_job
from nexanest.services.rls import acting_as
from tests.services.notifications.conftest import Service, auth

pytestmark = pytest.mark.integration


async def wait_for(fact: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await fact():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def evaluating(settings: Settings) -> AsyncIterator[Running]:
    stop, running = asyncio.Event(), Running()
    task = asyncio.create_task(run_evaluator(settings, stop=stop, running=running))
    try:
        yield running
    finally:
        stop.set()
        await task


class Market:
    """Publishes quote updates of this test's symbols as the quote script does."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._seq = 0

    async def tick(self, symbol: str, price: str) -> None:
        self._seq += 1
        now = time.time_ns()
        message = f"{now} {self._seq} {price} {price} {price} 1 {now} XTST"
        channel = quote_channel(self._service.settings.redis.quote_key_prefix, symbol)
        await self._service.queue_redis.publish(channel, message)


async def queued(service: Service) -> list[Fanout]:
    raw = await service.queue_redis.lrange(service.settings.notifications.key_prefix + "queue", 0, -1)
    jobs = [decode_job(r if isinstance(r, bytes) else r.encode()) for r in reversed(raw)]
    return [j for j in jobs if isinstance(j, Fanout)]


async def known(running: Running, alert_id: str, *, state: str | None = None) -> bool:
    live = running.evaluator.index.get(uuid.UUID(alert_id)) if running.evaluator else None
    return live is not None and (state is None or live.state == state)


async def stored(pool: asyncpg.Pool, user: uuid.UUID, alert_id: str) -> asyncpg.Record:
    async with acting_as(pool, user) as conn:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT state, fired_count, last_fired_price FROM price_alerts WHERE alert_id = $1", uuid.UUID(alert_id)
        )
    return row


async def test_each_crossing_fires_once_and_a_restart_does_not_fire_again(
    service: Service, users: list[uuid.UUID], test_id: str
) -> None:
    alice, _ = users
    sym, sentinel = f"EV{test_id.upper()}", f"SN{test_id.upper()}"
    market = Market(service)
    alert = await service.alert(alice, symbol=sym, kind="crosses_above", threshold="10", hysteresis="0.5")
    async with evaluating(service.settings) as running:
        await wait_for(lambda: known(running, alert["id"]), "the alert in the index")
        for price in ("9", "10.1", "9.8", "10.3", "9.6", "9.4", "10"):  # fires at 10.1 and at 10 only
            await market.tick(sym, price)
        await wait_for(lambda: _fired(service, 2), "two firings")

        async def second_stored() -> bool:  # queued first, stored after (evaluator.py)
            return bool((await stored(service.pool, alice, alert["id"]))["fired_count"] == 2)

        await wait_for(second_stored, "the second firing stored")
        row = await stored(service.pool, alice, alert["id"])
        assert (row["state"], row["fired_count"], str(row["last_fired_price"])) == ("fired", 2, "10.000000000")
        jobs = await queued(service)
        assert [j.notice.notification_id for j in jobs] == [
            alert_notification_id(uuid.UUID(alert["id"]), 1),
            alert_notification_id(uuid.UUID(alert["id"]), 2),
        ]
        assert [j.notice.data["price"] for j in jobs] == ["10.1", "10"]
        assert jobs[0].notice.title == f"{sym} crossed above 10"

    # A new evaluator reads the stored state: still above, nothing fires.
    guard = await service.alert(alice, symbol=sentinel, kind="crosses_below", threshold="5")
    async with evaluating(service.settings) as running:
        await wait_for(lambda: known(running, guard["id"]), "the sentinel in the index")
        assert running.evaluator is not None
        await wait_for(lambda: known(running, alert["id"], state="fired"), "the stored state")
        await market.tick(sym, "10.6")
        await market.tick(sentinel, "4")
        await wait_for(lambda: _fired(service, 3), "the sentinel")
        assert [j.notice.alert_id for j in await queued(service)][-1] == uuid.UUID(guard["id"])
        # Changes announced by the API reach it: disabled, the alert is dropped.
        off = await service.http.patch(f"/alerts/{alert['id']}", json={"enabled": False}, headers=auth(alice))
        assert off.status_code == 200
        await wait_for(lambda: _not_known(running, alert["id"]), "the alert dropped")
        await market.tick(sym, "9")
        await market.tick(sym, "11")
        await market.tick(sentinel, "6")
        await market.tick(sentinel, "4.5")
        await wait_for(lambda: _fired(service, 4), "the sentinel again")
        assert (await stored(service.pool, alice, alert["id"]))["fired_count"] == 2


async def test_moves_pct_fires_on_a_move_within_its_window(
    service: Service, users: list[uuid.UUID], test_id: str
) -> None:
    alice, _ = users
    sym = f"MV{test_id.upper()}"
    market = Market(service)
    alert = await service.alert(alice, symbol=sym, kind="moves_pct", threshold="5", hysteresis="1", window_s=60)
    async with evaluating(service.settings) as running:
        await wait_for(lambda: known(running, alert["id"]), "the alert in the index")
        for price in ("100", "102", "104.9", "105"):
            await market.tick(sym, price)
        await wait_for(lambda: _fired(service, 1), "the move")
        [job] = await queued(service)
        assert job.notice.data["move_pct"] == "5"
        assert job.notice.title == f"{sym} moved 5% within 60s"


async def _fired(service: Service, n: int) -> bool:
    return len(await queued(service)) >= n


async def _not_known(running: Running, alert_id: str) -> bool:
    return not await known(running, alert_id)
