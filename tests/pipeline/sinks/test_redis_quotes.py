"""RedisQuoteSink against the real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as redis

from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink, read_quote
from nexanest.schemas.ticks import Tick

pytestmark = pytest.mark.integration

T0 = 1_764_000_000_000_000_000


def tick(price: float, ts_ns: int, seq: int, symbol: str = "LATE") -> Tick:
    p = int(price * 1e9)
    return Tick(
        symbol=symbol,
        exchange="XNAS",
        price_e9=p,
        size_e9=100 * 10**9,
        ts_ns=ts_ns,
        source="t",
        seq=seq,
        bid_e9=p - 10**7,
        ask_e9=p + 10**7,
    )


async def test_late_older_tick_does_not_overwrite_newer_quote(quotes_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    sink.write([tick(101.5, T0 + 2_000, seq=2)])
    await sink.flush()
    sink.write([tick(99.0, T0 + 1_000, seq=1)])  # arrives later, happened earlier
    await sink.flush()
    quote = await read_quote(quotes_redis, "LATE", prefix)
    assert quote["price"] == "101.5"
    assert quote["ts_ns"] == str(T0 + 2_000)
    assert quote["bid"] == "101.49"
    assert quote["ask"] == "101.51"


async def test_newer_tick_moves_quote_forward_and_ties_break_on_seq(quotes_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    sink.write([tick(10, T0, seq=5)])
    await sink.flush()
    sink.write([tick(11, T0 + 1, seq=6)])
    await sink.flush()
    assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "11"
    # Same exchange time: the later sequence number wins, an earlier one does not.
    sink.write([tick(12, T0 + 1, seq=4)])
    await sink.flush()
    assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "11"
    sink.write([tick(13, T0 + 1, seq=7)])
    await sink.flush()
    assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "13"


async def test_timestamps_beyond_double_precision_compare_exactly(quotes_redis: redis.Redis, test_id: str) -> None:
    """19-digit nanosecond times differ in the last digit; Lua doubles would call them equal."""
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    sink.write([tick(50, T0 + 3, seq=1)])
    await sink.flush()
    sink.write([tick(40, T0 + 2, seq=9)])
    await sink.flush()
    assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "50"


async def test_one_batch_many_symbols_out_of_order(quotes_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    batch = [tick(100 + i, T0 + (i * 7919) % 1000, seq=i, symbol=f"S{i % 10}") for i in range(1_000)]
    sink.write(batch)
    assert await sink.flush() == 10
    for s in range(10):
        latest = max((t for t in batch if t.symbol == f"S{s}"), key=lambda t: (t.ts_ns, t.seq))
        quote = await read_quote(quotes_redis, f"S{s}", prefix)
        assert quote["ts_ns"] == str(latest.ts_ns)
        assert quote["seq"] == str(latest.seq)
