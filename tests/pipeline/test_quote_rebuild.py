from __future__ import annotations

import time

import asyncpg
import pytest
import redis.asyncio as redis

from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.quote_rebuild import rebuild_quotes
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink, read_quote
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.schemas.ticks import Tick

pytestmark = pytest.mark.integration


async def test_lost_quotes_are_rebuilt_from_the_table_and_newer_ones_kept(
    timescale_pool: asyncpg.Pool, quotes_redis: redis.Redis, test_id: str
) -> None:
    now = time.time_ns()
    symbols = [f"RB{test_id[:6].upper()}{i}" for i in range(3)]
    ticks = [
        Tick(
            symbol=s,
            exchange="XNAS",
            price_e9=(10 + i) * 10**9 + k,
            size_e9=10**9,
            ts_ns=now - 10_000_000 + k * 1000,
            source=f"rb-{test_id}",
            seq=k * 10 + i,
            bid_e9=None,
            ask_e9=None,
        )
        for k in range(4)
        for i, s in enumerate(symbols)
    ]
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets)
    sink.write([(t, 0, n) for n, t in enumerate(ticks)])
    assert await sink.flush() == len(ticks)

    prefix = f"test:{test_id}:quote:"
    quotes = RedisQuoteSink(quotes_redis, prefix)
    # Redis holds a newer quote for the first symbol only (the others were lost).
    newer = Tick(symbol=symbols[0], exchange="X", price_e9=99 * 10**9, size_e9=1, ts_ns=now, source="x", seq=0)
    quotes.write([newer])
    await quotes.flush()

    assert await rebuild_quotes(timescale_pool, quotes, window_s=3600) >= 3
    assert (await read_quote(quotes_redis, symbols[0], prefix))["price"] == "99"
    for i, s in enumerate(symbols[1:], start=1):
        quote = await read_quote(quotes_redis, s, prefix)
        assert quote["price"] == f"{10 + i}.000000003"
        assert quote["seq"] == str(30 + i)
