"""Market indices through the real consumer: ticks -> Kafka -> run_consumer ->
market_indices rows and Redis index quotes, across a consumer restart."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import asyncpg
import pytest
import redis.asyncio as redis

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.db import ns_to_datetime
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import IndexDefinition, Settings
from nexanest.pipeline.sinks.redis_quotes import read_quote
from nexanest.schemas.ticks import Tick, encode_tick

pytestmark = pytest.mark.integration


async def send(settings: Settings, ticks: list[Tick]) -> None:
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for t in ticks:
            await producer.send_and_wait(settings.kafka.ticks_topic, encode_tick(t), key=t.symbol.encode())
    finally:
        await producer.stop()


async def test_indices_are_computed_stored_quoted_and_continue_after_a_restart(
    isolated: Settings, timescale_pool: asyncpg.Pool, quotes_redis: redis.Redis, test_id: str
) -> None:
    tag = test_id.upper()
    a, b, c = f"IA{tag}", f"IB{tag}", f"IC{tag}"
    pw, ew = f"PW{tag}", f"EW{tag}"
    settings = isolated.model_copy(
        update={
            "indices": [
                IndexDefinition(name=pw, method="price_weighted", symbols=[a, b, c], divisor=Decimal(3)),
                IndexDefinition(
                    name=ew,
                    method="equal_weight",
                    symbols=[a, b, c],
                    base_value=Decimal(1000),
                    base_prices={a: Decimal(100), b: Decimal(50), c: Decimal(200)},
                ),
            ]
        }
    )
    t0 = (time.time_ns() - 30 * 10**9) // 1000 * 1000
    seq = iter(range(1, 100))

    def tick(symbol: str, price: str, dt_ms: int) -> Tick:
        return Tick(
            symbol=symbol,
            exchange="XNAS",
            price_e9=int(Decimal(price).scaleb(9)),
            size_e9=10**9,
            ts_ns=t0 + dt_ms * 10**6,
            source=f"ix-{test_id}",
            seq=next(seq),
        )

    async def rows() -> list[asyncpg.Record]:
        fetched: list[asyncpg.Record] = await timescale_pool.fetch(
            "SELECT time, index_name, value, constituents, method FROM market_indices"
            " WHERE index_name = ANY($1) ORDER BY index_name, time",
            [pw, ew],
        )
        return fetched

    # Two of three constituents: nothing may publish yet.
    await send(settings, [tick(a, "101.25", 0), tick(b, "48.5", 1)])
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    assert stats.written == 2
    assert await rows() == []
    assert await read_quote(quotes_redis, pw, settings.redis.quote_key_prefix) == {}

    # A new consumer: A and B come from the seed (stored ticks), C from the topic.
    await send(settings, [tick(c, "250.125", 2)])
    await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    got = await rows()
    assert [(r["index_name"], r["value"], r["constituents"], r["method"]) for r in got] == [
        (ew, Decimal("1077.708333333"), 3, "equal_weight"),  # (1.0125 + 0.97 + 1.250625) / 3 x 1000
        (pw, Decimal("133.291666667"), 3, "price_weighted"),  # (101.25 + 48.5 + 250.125) / 3
    ]
    assert {r["time"] for r in got} == {ns_to_datetime(t0 + 2 * 10**6)}  # C's tick time, the newest

    # More ticks in a third run (the last tick of A, by tick time, is 110).
    await send(settings, [tick(a, "110", 10), tick(b, "45", 11), tick(a, "90", 5), tick(c, "230", 12)])
    await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    got = await rows()
    last_pw = [r for r in got if r["index_name"] == pw][-1]
    last_ew = [r for r in got if r["index_name"] == ew][-1]
    assert last_pw["value"] == Decimal("128.333333333")  # (110 + 45 + 230) / 3
    assert last_ew["value"] == Decimal("1050.000000000")  # (1.1 + 0.9 + 1.15) / 3 x 1000
    for name in (pw, ew):
        times = [r["time"] for r in got if r["index_name"] == name]
        assert times == sorted(set(times))
        assert times[-1] >= ns_to_datetime(t0 + 12 * 10**6)

    # Quoted in Redis like a symbol.
    quote = await read_quote(quotes_redis, pw, settings.redis.quote_key_prefix)
    assert quote["price"] == "128.333333333"
    assert quote["exchange"] == "INDEX"
    assert ns_to_datetime(int(quote["ts_ns"])) == last_pw["time"]
    assert (await read_quote(quotes_redis, ew, settings.redis.quote_key_prefix))["price"] == "1050"
